"""The MQTT publisher: events, presence, camera and index state, snapshots, Home Assistant discovery.

Topics (``<prefix>`` = ``mqtt.topic_prefix``; payloads in ``streamd/schemas``, see its README):

- ``<prefix>/available``: ``online`` / ``offline``, retained, also our last will;
- ``<prefix>/events`` and ``<prefix>/<camera>/events``: event JSON (schemas/event.json), not retained;
- ``<prefix>/<camera>/person/<label>/snapshot``: best face JPEG, retained;
- ``<prefix>/presence/<label>``: presence JSON (schemas/presence.json), retained;
- ``<prefix>/<camera>/status``: camera state JSON (schemas/camera_status.json), retained;
- ``<prefix>/index/state``: serving index JSON (schemas/index_state.json), retained;
- ``<discovery_prefix>/.../config``: Home Assistant discovery (streamd.sinks.discovery), retained.

Delivery of events:

- ``publish_event`` never blocks: it puts the event on a bounded queue (full = dropped and
  counted). One background thread owns everything else: it numbers the event (per-camera
  ``seq``), writes it to the on-disk spool (fsync'd) and sends spooled events in order, at most
  ``WINDOW`` unacknowledged at a time. An event leaves the spool only when the broker acknowledged
  it (PUBACK/PUBCOMP for both of its topics), so a broker outage or a daemon restart loses nothing.
- When the connection drops, unacknowledged events go back to the head of the queue and are sent
  again after reconnecting, in order; paho's own copies are discarded on reconnect so that every
  resend passes the age check below. QoS 1 is "at least once": an event whose PUBACK was lost with
  the connection may arrive twice; subscribers dedupe by ``event_id``.
- An identity decision (``identified``, ``update``) older than ``max_event_age_s`` when it could be
  sent is dropped and counted (``streamd_events_dropped_total{reason="too_old"}``), never sent late;
  an acknowledged event is never sent again (skrashevich/double-take issue 281: a replayed
  "identified" unlocked a door). ``new`` and ``end`` events are history and are always delivered.

The thread runs paho's network loop itself (``loop_read``/``loop_write``/``loop_misc`` on a
``select`` that also watches a wake-up socket), so paho's callbacks run on the same thread as the
spool: no locks around the delivery state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamd.errors import ConfigError
from streamd.metrics import Metrics
from streamd.sinks import discovery
from streamd.sinks.config import MqttSettings
from streamd.sinks.presence import Presence, PresenceTracker
from streamd.sinks.spool import Spool
from streamd.sinks.topics import Topics
from streamd.types import IdentityEvent

if TYPE_CHECKING:
    from streamd.settings import Settings

log = logging.getLogger(__name__)

#: Events sent and not yet acknowledged at once (each is two messages). Enough to fill a LAN
#: round trip; small so that a reconnect resends little.
WINDOW = 16
#: The event types max_event_age_s applies to: decisions an automation may act on.
DECISION_TYPES = frozenset({"identified", "update"})
#: Presence and per-camera seq counters, saved beside the spool (a cache: the spool is the truth).
STATE_FILE = "state.json"
ONLINE = b"online"
OFFLINE = b"offline"
_JPEG_MAGIC = b"\xff\xd8"
_SPOOL_EXPIRY_EVERY_S = 10.0


@dataclass
class _InFlight:
    """An event sent on the current connection: the message ids (one per topic) not yet acknowledged."""

    type: str
    mids: dict[int, str] = field(default_factory=dict)  # mid -> topic
    failure: str | None = None


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def describe_connect_error(exc: BaseException) -> str:
    """A short reason for a failed connection attempt (never includes credentials)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.CertificateError):
        return f"TLS certificate check failed ({exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class MqttPublisher:
    """Publishes streamd's events and state to one MQTT broker (see the module docstring).

    Thread-safe for callers: every ``publish_*`` / ``set_*`` method returns at once. ``start()``
    raises ConfigError for a bad password source, TLS file or spool directory; broker problems
    never raise, they are retried with backoff and reported by ``connected`` / ``last_error``.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        metrics: Metrics | None = None,
        cameras: Iterable[str] = (),
        labels: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cameras`` and ``labels`` (the enrolled people) are announced to Home Assistant; ``labels``
        None = not known yet (call ``set_labels`` once the index is loaded; people identified are
        announced as they come)."""
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.topics = Topics(settings.topic_prefix, settings.discovery_prefix)
        self._clock = clock
        self._where = f"{settings.host}:{settings.effective_port}"

        # ---- shared with callers (thread-safe primitives only)
        self._intake: queue.Queue[IdentityEvent] = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()  # guards the _incoming_* fields
        self._incoming_state: dict[str, bytes] = {}
        self._incoming_cameras: set[str] = set(cameras)
        self._incoming_labels: set[str] | None = None if labels is None else set(labels)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._stop_deadline = math.inf
        self._connected = threading.Event()
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._queue_full_logged = 0.0

        # ---- owned by the publisher thread
        self._client: paho.Client | None = None
        self._spool = Spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            max_age_s=settings.spool_max_age_s,
            on_drop=self._count_drop,
            clock=clock,
        )
        self._presence = PresenceTracker(settings.away_after_s)
        self._seq: dict[str, int] = {}
        self._cameras: set[str] = set()
        self._labels: set[str] = set()
        self._discovery: dict[str, bytes] = {}  # topic -> config (retained)
        self._retained: dict[str, bytes] = {}  # topic -> state payload (retained)
        self._dirty: dict[str, bytes] = {}  # retained topics to (re)send; b"" deletes
        self._unsent: deque[str] = deque()
        self._sent: dict[str, _InFlight] = {}
        self._mids: dict[int, str] = {}
        # Topics of an event the broker already acknowledged, kept across a requeue so that a resend
        # after a reconnect does not repeat them (fewer duplicates than resending both).
        self._acked_topics: dict[str, set[str]] = {}
        self._link_up = False
        self._announce = False
        self._closing = False
        self._next_attempt = 0.0
        self._backoff = settings.reconnect_min_s
        self._down_since: float | None = None
        self._next_spool_expiry = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, metrics: Metrics | None = None, labels: Iterable[str] | None = None
    ) -> MqttPublisher:
        """The publisher for ``settings.mqtt``, announcing the enabled cameras of ``settings.cameras``."""
        cameras = [c.name for c in settings.cameras if c.enabled]
        return cls(settings.mqtt, metrics=metrics, cameras=cameras, labels=labels)

    # ================================================================== public API

    def start(self) -> None:
        """Open the spool, build the client and start the publisher thread (connects in the background)."""
        if self._thread is not None:
            raise RuntimeError("MqttPublisher.start() called twice")
        self._client = self._make_client()
        records = self._spool.open()
        self._restore(records)
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what can be sent within ``timeout`` s, leave the rest in the spool, publish ``offline``, disconnect."""
        if self._thread is None:  # never started: nothing to flush
            self._stop.set()
            self._wake_r.close()
            self._wake_w.close()
            return
        self._stop_deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake()
        self._thread.join(timeout + 3.0)
        if self._thread.is_alive():
            log.warning("MQTT publisher thread did not stop within %.1f s", timeout + 3.0)

    def publish_event(self, event: IdentityEvent) -> bool:
        """Queue one track event for ``<prefix>/events`` and ``<prefix>/<camera>/events``; never blocks.

        Returns False when the event was dropped (publisher stopped, or queue full); the drop is counted.
        """
        if not isinstance(event, IdentityEvent):
            raise TypeError(f"publish_event expects an IdentityEvent, got {type(event).__name__}")
        if self._stop.is_set():
            self._count_drop("stopped", 1)
            return False
        try:
            self._intake.put_nowait(event)
        except queue.Full:
            self._count_drop("queue_full", 1)
            now = time.monotonic()
            if now - self._queue_full_logged > 10.0:
                self._queue_full_logged = now
                log.warning("MQTT publisher queue full (%d events): dropping new events", self.settings.queue_size)
            return False
        self._wake()
        return True

    def publish_camera_status(self, camera: str, status: Mapping[str, Any]) -> None:
        """Retain a camera's state on ``<prefix>/<camera>/status`` (keys per schemas/camera_status.json).

        ``camera`` and ``updated_at`` (now) are added unless ``status`` has them.
        """
        payload = {"camera": camera, "updated_at": self._clock(), **status}
        self._post(self.topics.camera_status(camera), _json(payload), camera=camera)

    def publish_index_state(self, state: Mapping[str, Any]) -> None:
        """Retain the serving index's state on ``<prefix>/index/state`` (schemas/index_state.json)."""
        payload = {"updated_at": self._clock(), **state}
        self._post(self.topics.index_state, _json(payload))

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        """Retain the best face JPEG of ``label`` on ``camera`` on ``<prefix>/<camera>/person/<label>/snapshot``."""
        data = bytes(jpeg)
        if not data.startswith(_JPEG_MAGIC):
            raise ValueError(f"snapshot of {label!r} on camera {camera!r} is not a JPEG (no FF D8 start)")
        self._post(self.topics.snapshot(camera, label), data, camera=camera)

    def set_labels(self, labels: Iterable[str]) -> None:
        """The enrolled people (after an index reload): a presence binary_sensor each in Home Assistant.

        People no longer enrolled lose their discovery config, presence and snapshots (retained topics cleared).
        """
        with self._lock:
            self._incoming_labels = set(labels)
        self._wake()

    def add_cameras(self, cameras: Iterable[str]) -> None:
        """Cameras to announce to Home Assistant (cameras seen in events or status are added by themselves)."""
        with self._lock:
            self._incoming_cameras.update(cameras)
        self._wake()

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed or the link dropped (None after a success)."""
        return self._last_error

    @property
    def spool_depth(self) -> int:
        """Events in the spool: not yet acknowledged by the broker."""
        return len(self._spool)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued event was acknowledged (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._intake.unfinished_tasks == 0 and len(self._spool) == 0:
                return True
            time.sleep(0.02)
        return False

    # ================================================================== callers -> thread

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are shut down

    def _post(self, topic: str, payload: bytes, *, camera: str | None = None) -> None:
        with self._lock:
            self._incoming_state[topic] = payload
            if camera is not None:
                self._incoming_cameras.add(camera)
        self._wake()

    def _count_drop(self, reason: str, count: int) -> None:
        self.metrics.events_dropped.labels(reason).inc(count)

    # ================================================================== client

    def _make_client(self) -> paho.Client:
        s = self.settings
        if s.protocol == "5":
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=paho.MQTTv5)
        else:
            # clean_session False: a persistent session, kept by the broker across our reconnects.
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=paho.MQTTv311, clean_session=False
            )
        # paho's own messages go to debug: what a user needs is logged once, clearly, by us. paho
        # logs packet flags (u1, p1), never the password.
        paho_log = logging.getLogger(f"{__name__}.paho")
        client.on_log = lambda _client, _userdata, _level, text: paho_log.debug("%s", text)
        if s.username:
            client.username_pw_set(s.username, s.resolve_password())
        if s.tls:
            self._configure_tls(client)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(0)  # our WINDOW bounds events; paho must not park messages
        client.connect_timeout = float(min(10, s.keepalive_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _configure_tls(self, client: paho.Client) -> None:
        s = self.settings
        for name in ("ca_file", "certfile", "keyfile"):
            path = getattr(s, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"mqtt.{name} {path}: file not found")
        try:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.certfile) if s.certfile else None,
                keyfile=str(s.keyfile) if s.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            files = ", ".join(f"{n} {getattr(s, n)}" for n in ("ca_file", "certfile", "keyfile") if getattr(s, n))
            raise ConfigError(f"mqtt TLS: cannot load {files or 'the system CAs'}: {exc}") from None
        if s.tls_insecure:
            client.tls_insecure_set(True)

    def _connect(self) -> None:
        s = self.settings
        assert self._client is not None
        try:
            if s.protocol == "5":
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = s.session_expiry_s
                self._client.connect(
                    s.host, s.effective_port, s.keepalive_s, clean_start=False, properties=props
                )
            else:
                self._client.connect(s.host, s.effective_port, s.keepalive_s)
        except (OSError, ValueError) as exc:  # ssl errors are OSError, certificate mismatch ValueError
            self._connection_failed(f"cannot connect to MQTT broker {self._where}: {describe_connect_error(exc)}")

    def _connection_failed(self, message: str, level: int = logging.WARNING) -> None:
        delay = min(self._backoff, self.settings.reconnect_max_s) * random.uniform(0.8, 1.0)
        self._next_attempt = time.monotonic() + delay
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_s)
        if message != self._last_error:
            log.log(level, "%s; retrying in %.1f s (events wait in the spool)", message, delay)
        else:
            log.debug("%s; retrying in %.1f s", message, delay)
        self._last_error = message

    # ---- paho callbacks (run on the publisher thread, inside loop_read/loop_write/publish)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._connection_failed(
                f"MQTT broker {self._where} refused the connection: {reason} "
                "(check mqtt.username, the password and mqtt.client_id)",
                logging.ERROR,
            )
            return
        # paho would resend its unacknowledged copies right after this callback, before any age
        # check; the spool resends them itself (see _requeue), so paho's copies are discarded.
        client.drop_out_messages()
        self._requeue()
        self._link_up = True
        self._announce = True
        self._backoff = self.settings.reconnect_min_s
        if self._down_since is not None and self._last_error:
            log.info(
                "Connected to MQTT broker %s after %.0f s; %d event(s) in the spool",
                self._where, time.monotonic() - self._down_since, len(self._spool),
            )
        else:
            log.info("Connected to MQTT broker %s", self._where)
        self._last_error = None
        self._down_since = None
        self._connected.set()
        self.metrics.mqtt_connected.set(1)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_up = self._link_up
        self._link_up = False
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        self._requeue()
        if self._closing:
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
        if was_up:
            self._backoff = self.settings.reconnect_min_s
            self._connection_failed(f"lost the connection to MQTT broker {self._where} ({reason})")
        elif self._next_attempt <= time.monotonic():
            # The attempt failed after the TCP connect (e.g. refused CONNACK, already logged).
            self._connection_failed(self._last_error or f"MQTT broker {self._where} closed the connection")

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        name = self._mids.pop(mid, None)
        entry = self._sent.get(name) if name is not None else None
        if entry is None:
            return  # a retained state message, or an event requeued by a disconnect
        topic = entry.mids.pop(mid, None)
        if reason is not None and reason.is_failure:
            entry.failure = str(reason)
        elif topic is not None:
            self._acked_topics.setdefault(name, set()).add(topic)
        if not entry.mids:
            self._complete(name)

    # ================================================================== publisher thread

    def _run(self) -> None:
        try:
            while True:
                self._absorb()
                now = self._clock()
                self._expire(now)
                if self._stop.is_set() and (self._flushed() or time.monotonic() >= self._stop_deadline):
                    break
                if self._client.socket() is None and time.monotonic() >= self._next_attempt:
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                    self._connect()
                if self._link_up:
                    self._pump(now)
                self._network_wait(self._wait_timeout(now))
        except Exception:  # a bug here must not kill the daemon silently
            log.exception("MQTT publisher thread failed; events stay in the spool %s", self.settings.spool_dir)
        finally:
            self._shutdown()

    def _flushed(self) -> bool:
        return self._intake.unfinished_tasks == 0 and (
            not self._link_up or (not self._unsent and not self._sent and not self._dirty)
        )

    def _wait_timeout(self, now: float) -> float:
        timeout = 1.0
        expiry = self._presence.next_expiry()
        if expiry is not None:
            timeout = min(timeout, max(0.0, expiry - now))
        if self._client.socket() is None:
            timeout = min(timeout, max(0.0, self._next_attempt - time.monotonic()))
        if self._stop.is_set():
            timeout = min(timeout, 0.05)
        if not self._intake.empty():
            timeout = 0.0
        return timeout

    def _network_wait(self, timeout: float) -> None:
        client = self._client
        sock = client.socket()
        pending = bool(sock is not None and hasattr(sock, "pending") and sock.pending())
        rlist: list[Any] = [self._wake_r] + ([sock] if sock is not None else [])
        wlist: list[Any] = [sock] if sock is not None and client.want_write() else []
        try:
            readable, writable, _ = select.select(rlist, wlist, [], 0.0 if pending else timeout)
        except (OSError, ValueError):  # the socket was closed under us; the next round reconnects
            readable, writable = [], []
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if sock is None:
            return
        if pending or sock in readable:
            client.loop_read()
        if client.socket() is not None and sock in writable:
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()

    # ---- intake

    def _absorb(self, limit: int = 64) -> None:
        """Take what callers posted; at most ``limit`` events per round so the network is served between."""
        with self._lock:
            states, self._incoming_state = self._incoming_state, {}
            cameras, self._incoming_cameras = self._incoming_cameras, set()
            labels, self._incoming_labels = self._incoming_labels, None
        for camera in cameras:
            self._add_camera(camera)
        if labels is not None:
            self._set_labels(labels)
        for topic, payload in states.items():
            self._set_retained(topic, payload)
        events: list[IdentityEvent] = []
        while len(events) < limit:
            try:
                events.append(self._intake.get_nowait())
            except queue.Empty:
                break
        if not events:
            return
        try:
            self._accept([self._number(event) for event in events])
        finally:
            for _ in events:
                self._intake.task_done()
        self._save_state()

    def _number(self, event: IdentityEvent) -> dict[str, Any]:
        """Give the event its per-camera seq, note the camera and the person; returns the payload."""
        seq = self._seq.get(event.camera, 0) + 1
        self._seq[event.camera] = seq
        self._add_camera(event.camera)
        if event.label:
            self._add_label(event.label)
            seen = self._presence.seen(event.label, event.camera, event.frame_ts)
            if seen is not None:
                self._set_presence(seen)
        return dataclasses.replace(event, seq=seq).to_dict()

    def _accept(self, payloads: list[dict[str, Any]]) -> None:
        try:
            names = self._spool.append_many(payloads, protected=self._sent)
        except OSError as exc:
            # A full or read-only disk: the events cannot be made durable. Counted; the daemon goes on.
            log.error(
                "MQTT spool %s: cannot write %d event(s) (%s); dropped",
                self.settings.spool_dir, len(payloads), exc.strerror or exc,
            )
            self._count_drop("spool_error", len(payloads))
            return
        self._unsent.extend(names)
        if not self._link_up:
            self.metrics.events_spooled.inc(len(names))
        self.metrics.spool_depth.set(len(self._spool))

    # ---- retained state

    def _set_retained(self, topic: str, payload: bytes) -> None:
        if payload:
            self._retained[topic] = payload
        else:
            self._retained.pop(topic, None)
        self._dirty[topic] = payload

    def _set_presence(self, presence: Presence) -> None:
        self._set_retained(self.topics.presence(presence.label), _json(presence.to_dict()))

    def _set_discovery(self, configs: list[tuple[str, dict[str, Any]]]) -> None:
        if not self.settings.discovery:
            return
        for topic, config in configs:
            data = _json(config)
            if self._discovery.get(topic) != data:
                self._discovery[topic] = data
                self._dirty[topic] = data

    def _add_camera(self, camera: str) -> None:
        if camera not in self._cameras:
            self._cameras.add(camera)
            self._set_discovery(discovery.camera_configs(self.topics, camera))

    def _add_label(self, label: str) -> None:
        if label not in self._labels:
            self._labels.add(label)
            self._set_discovery(discovery.person_configs(self.topics, label))

    def _set_labels(self, labels: set[str]) -> None:
        for label in sorted(labels - self._labels):
            self._add_label(label)
        for label in sorted(self._labels - labels):
            self._labels.discard(label)
            self._presence.forget(label)
            for topic, _ in discovery.person_configs(self.topics, label):
                self._discovery.pop(topic, None)
                self._dirty[topic] = b""
            self._set_retained(self.topics.presence(label), b"")
            for camera in self._cameras:
                snapshot = self.topics.snapshot(camera, label)
                if snapshot in self._retained:
                    self._set_retained(snapshot, b"")

    def _expire(self, now: float) -> None:
        for presence in self._presence.expire(now):
            log.info("Presence: %s is away (unseen for %.0f s)", presence.label, self.settings.away_after_s)
            self._set_presence(presence)
            self._save_state()
        if now >= self._next_spool_expiry:
            self._next_spool_expiry = now + _SPOOL_EXPIRY_EVERY_S
            if self._spool.expire(protected=self._sent):
                self.metrics.spool_depth.set(len(self._spool))

    # ---- sending

    def _publish(self, topic: str, payload: bytes, *, retain: bool, qos: int | None = None) -> paho.MQTTMessageInfo:
        assert self._client is not None
        return self._client.publish(topic, payload, qos=self.settings.qos if qos is None else qos, retain=retain)

    def _pump(self, now: float) -> None:
        if self._announce:
            self._announce = False
            self._dirty.clear()
            self._publish(self.topics.available, ONLINE, retain=True, qos=1)
            for topic, data in list(self._discovery.items()) + list(self._retained.items()):
                self._publish(topic, data, retain=True)
        elif self._dirty:
            dirty, self._dirty = self._dirty, {}
            for topic, data in dirty.items():
                self._publish(topic, data, retain=True)
        while self._link_up and self._unsent and len(self._sent) < WINDOW:
            name = self._unsent.popleft()
            record = self._spool.read(name)
            if record is None:
                self._acked_topics.pop(name, None)
                continue  # dropped by a bound meanwhile
            event = record.payload
            if self._too_old(event, now):
                self._acked_topics.pop(name, None)
                self._spool.remove(name)
                self._count_drop("too_old", 1)
                continue
            self._send_event(name, event)
        self.metrics.spool_depth.set(len(self._spool))

    def _too_old(self, event: Mapping[str, Any], now: float) -> bool:
        if event.get("type") not in DECISION_TYPES:
            return False
        age = now - float(event.get("decided_at") or 0.0)
        if age <= self.settings.max_event_age_s:
            return False
        log.warning(
            "Dropped %s event %s of camera %s: decided %.1f s ago, over mqtt.max_event_age_s (%.0f s)",
            event.get("type"), event.get("event_id"), event.get("camera"), age, self.settings.max_event_age_s,
        )
        return True

    def _send_event(self, name: str, event: Mapping[str, Any]) -> None:
        data = _json(event)
        entry = _InFlight(type=str(event.get("type")))
        # Registered before publishing: a disconnect inside publish() requeues it in order.
        self._sent[name] = entry
        done = self._acked_topics.get(name, set())
        for topic in (self.topics.events, self.topics.camera_events(str(event["camera"]))):
            if topic in done:
                continue
            info = self._publish(topic, data, retain=False)
            if not self._link_up or self._sent.get(name) is not entry:
                return  # the link dropped inside publish(); _requeue put this event back
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return  # not sent; the coming disconnect requeues it
            if info.is_published():
                continue  # QoS 0: written already, nothing to wait for
            entry.mids[info.mid] = topic
            self._mids[info.mid] = name
        if not entry.mids:
            self._complete(name)

    def _complete(self, name: str) -> None:
        entry = self._sent.pop(name)
        self._acked_topics.pop(name, None)
        self._spool.remove(name)
        if entry.failure:
            log.error("MQTT broker refused event %s: %s; dropped", name, entry.failure)
            self._count_drop("rejected", 1)
        else:
            self.metrics.events_published.labels(entry.type).inc()
        self.metrics.spool_depth.set(len(self._spool))

    def _requeue(self) -> None:
        """Unacknowledged events go back to the head of the queue, in their order."""
        if self._sent:
            self._unsent.extendleft(reversed(list(self._sent)))
            self._sent.clear()
        self._mids.clear()

    # ---- persistence of presence and seq

    def _restore(self, records: list[Any]) -> None:
        state: dict[str, Any] = {}
        path = self.settings.spool_dir / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("MQTT state %s unreadable (%s); starting without it", path, exc)
        seq = state.get("seq") if isinstance(state, dict) else None
        if isinstance(seq, dict):
            self._seq = {str(k): int(v) for k, v in seq.items() if isinstance(v, int)}
        for record in records:
            camera, n = record.payload.get("camera"), record.payload.get("seq")
            if isinstance(camera, str) and isinstance(n, int):
                self._seq[camera] = max(self._seq.get(camera, 0), n)
            self._unsent.append(record.name)
        presence = state.get("presence") if isinstance(state, dict) else None
        if isinstance(presence, list):
            self._presence.load_state(presence)
            for p in self._presence.all():
                self._add_label(p.label)
                self._set_presence(p)
        self.metrics.spool_depth.set(len(self._spool))
        if records:
            log.info("MQTT spool %s: %d event(s) from before the restart to send", self.settings.spool_dir, len(records))

    def _save_state(self) -> None:
        path = self.settings.spool_dir / STATE_FILE
        tmp = path.with_name(STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps({"seq": self._seq, "presence": self._presence.to_state()}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("MQTT state %s not saved: %s", path, exc)

    # ---- shutdown

    def _shutdown(self) -> None:
        client = self._client
        try:
            # Events still queued (or racing with stop()) reach the spool while time allows.
            end = max(self._stop_deadline, time.monotonic() + 1.0)
            while not self._intake.empty() and time.monotonic() < end:
                self._absorb()
        except Exception:  # noqa: BLE001 - shutting down; the spool keeps what it has
            log.exception("MQTT publisher: error while spooling the last events")
        lost = self._intake.qsize()
        if lost:
            log.warning("MQTT publisher stopped with %d event(s) not yet spooled; dropped", lost)
            self._count_drop("stopped", lost)
        self._closing = True
        if client is not None and self._link_up:
            info = self._publish(self.topics.available, OFFLINE, retain=True, qos=1)
            deadline = max(self._stop_deadline, time.monotonic() + 1.0)
            while self._link_up and time.monotonic() < deadline and not info.is_published():
                self._network_wait(0.05)
            client.disconnect()
            end = time.monotonic() + 1.0
            while client.socket() is not None and time.monotonic() < end:
                self._network_wait(0.05)
        self._link_up = False
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        self._save_state()
        self._spool.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._unsent or self._sent:
            log.info("MQTT publisher stopped; %d event(s) stay in the spool %s", len(self._spool), self.settings.spool_dir)

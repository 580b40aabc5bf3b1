"""`streamd bench mqtt`: what the MQTT publisher delivers, against a broker you name.

Three figures, each through the real path (spool with fsync, paho, the broker, a subscriber):

- latency at a camera-like rate: publish_event() -> message received by a subscriber, p50/p95;
- burst throughput: events/s from publish_event() to all PUBACKs, with a queue of ``--events``;
- spool: append rate while the broker is unreachable (fsync per event), then the drain rate of
  those events by a new publisher (a daemon restart after an outage).

Run it against a broker that nothing else uses, e.g. ``mosquitto -p 18830`` started by hand.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import click

from streamd.errors import StreamdError
from streamd.metrics import Metrics
from streamd.sinks.config import MqttSettings
from streamd.sinks.mqtt import MqttPublisher
from streamd.types import IdentityEvent


def _event(camera: str, i: int) -> IdentityEvent:
    now = time.time()
    return IdentityEvent(
        event_id=uuid.uuid4().hex, type=("new", "identified", "update", "end")[i % 4], camera=camera,
        track_id=i // 4, label=None if i % 4 == 0 else "person_1", score=0.7, margin=0.2,
        box=(100.0, 80.0, 180.0, 170.0), frame_ts=now, decided_at=now,
    )


class _Receiver:
    """A plain paho subscriber noting when each event_id arrives."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import json

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.arrived: dict[str, float] = {}
        self._ready = threading.Event()
        self._json = json
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise StreamdError(f"bench mqtt: cannot subscribe at {host}:{port}")

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001 - paho callback
        self.arrived[self._json.loads(msg.payload)["event_id"]] = time.time()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher(settings: MqttSettings, spool: Path, port: int | None = None) -> MqttPublisher:
    fields = {"spool_dir": spool, "client_id": f"streamd-bench-{uuid.uuid4().hex[:6]}", "discovery": False}
    if port is not None:
        fields["port"] = port
    return MqttPublisher(settings.model_copy(update=fields), metrics=Metrics())


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


@click.command("mqtt")
@click.option("--host", default="127.0.0.1", show_default=True, help="Broker host (a test broker).")
@click.option("--port", type=int, default=1883, show_default=True, help="Broker port.")
@click.option("--events", type=int, default=2000, show_default=True, help="Events in the burst and spool runs.")
@click.option("--rate", type=float, default=20.0, show_default=True, help="Events/s in the latency run.")
@click.option("--qos", type=click.IntRange(0, 2), default=1, show_default=True)
def command(host: str, port: int, events: int, rate: float, qos: int) -> None:
    """Publisher latency, burst throughput, and spool append/drain rates."""
    settings = MqttSettings(host=host, port=port, qos=qos, max_event_age_s=3600.0, queue_size=max(events, 1000))
    receiver = _Receiver(host, port, f"{settings.topic_prefix}/events")
    with tempfile.TemporaryDirectory(prefix="streamd-bench-mqtt-") as tmp:
        root = Path(tmp)
        try:
            # ---- latency at a camera-like rate
            pub = _publisher(settings, root / "latency")
            pub.start()
            if not pub.wait_connected(10):
                raise StreamdError(f"bench mqtt: {pub.last_error}")
            sent: dict[str, float] = {}
            n_latency = max(20, int(rate * 10))
            for i in range(n_latency):
                ev = _event("bench", i)
                sent[ev.event_id] = time.time()
                pub.publish_event(ev)
                time.sleep(1.0 / rate)
            pub.wait_idle(30)
            time.sleep(0.3)
            lat = [(receiver.arrived[k] - t) * 1000 for k, t in sent.items() if k in receiver.arrived]
            click.echo(
                f"latency at {rate:g} events/s (publish_event -> subscriber, QoS {qos}, {len(lat)}/{n_latency} "
                f"received): p50 {statistics.median(lat):.1f} ms, p95 {_pct(lat, 95):.1f} ms"
            )

            # ---- burst throughput
            start = time.perf_counter()
            for i in range(events):
                pub.publish_event(_event("bench", i))
            pub.wait_idle(120)
            took = time.perf_counter() - start
            click.echo(f"burst: {events} events acknowledged in {took:.2f} s = {events / took:.0f} events/s")
            pub.stop(5)

            # ---- spool while the broker is unreachable, then drain by a new publisher
            spool = root / "spool"
            down = _publisher(settings, spool, port=1)  # nothing listens on port 1
            down.start()
            start = time.perf_counter()
            for i in range(events):
                down.publish_event(_event("bench", i))
            while down.spool_depth < events and time.perf_counter() - start < 120:
                time.sleep(0.005)
            took = time.perf_counter() - start
            down.stop(1)
            click.echo(
                f"spool (broker unreachable, fsync each): {events} events in {took:.2f} s = "
                f"{events / took:.0f} events/s, {took / events * 1000:.2f} ms/event"
            )
            up = _publisher(settings, spool)
            start = time.perf_counter()
            up.start()
            up.wait_idle(300)
            took = time.perf_counter() - start
            up.stop(5)
            click.echo(f"drain after restart: {events} spooled events sent in {took:.2f} s = {events / took:.0f} events/s")
        finally:
            receiver.close()

"""One thread per camera that keeps it connected, decodes, samples and hands frames on.

:class:`CameraSource` is the public face of a camera::

    source = CameraSource(settings, metrics, on_state=publish_state)   # queue made from settings
    source.start()
    while (item := source.queue.get(timeout=1.0)) is not END: ...     # Frame, or None on timeout
    source.stop()                                                       # interrupts a blocked read

The supervisor connects within ``connect_timeout_s``; a stream that gives no frame for
``stall_timeout_s`` is down; after any failure it waits ``backoff`` (exponential, jittered,
capped) and tries again, forever, until stopped. Its :class:`CameraState` (connecting,
streaming, backoff with ``next_retry_at``, ended, stopped) is readable at any time and every
status change is passed to ``on_state``. Errors are logged once per outage (then at INFO) with
passwords masked, and counted in ``streamd_stream_errors_total{camera, kind}``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable

from streamd.errors import SourceError
from streamd.log_filters import with_log_context
from streamd.metrics import Metrics
from streamd.sources import interrupt
from streamd.sources.config import CameraSettings
from streamd.sources.pyav_source import PyAVReader
from streamd.sources.queues import FrameQueue
from streamd.sources.reader import Decoded, ErrorHook, VideoReader
from streamd.sources.redact import redact_text
from streamd.sources.sampler import Sampler
from streamd.sources.state import CameraState, StateCallback, StateCell
from streamd.sources.usb import open_usb
from streamd.types import Frame

log = logging.getLogger(__name__)

FrameCallback = Callable[[Frame], None]
Opener = Callable[[CameraSettings, ErrorHook, threading.Event], VideoReader]

# Recoverable problems inside a healthy stream (damaged packets, concealed frames) are logged
# at most once per this many seconds per camera and kind, with the count of those not logged.
_ERROR_LOG_INTERVAL_S = 10.0


def open_reader(settings: CameraSettings, on_error: ErrorHook, stop: threading.Event) -> VideoReader:
    """An open reader for ``settings``: USB devices through :mod:`usb`, everything else through PyAV."""
    if settings.kind == "usb":
        return open_usb(settings, on_error=on_error, stop=stop)
    return PyAVReader(settings, on_error=on_error, stop=stop).open()


def backoff_delay(settings: CameraSettings, attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure (1-based), with jitter."""
    b = settings.backoff
    base = min(b.max_s, b.initial_s * b.multiplier ** max(0, attempts - 1))
    return max(0.0, base * (1.0 + b.jitter * rng.uniform(-1.0, 1.0)))


class CameraSource:
    """A supervised camera: start it, read its frames, watch its state, stop it.

    Frames go to ``on_frame`` (called in the camera thread; it must not block) or, by default,
    into :attr:`queue`, a :class:`FrameQueue` sized by the camera's ``queue_size`` and
    ``drop_policy`` that is closed (its end marker) whenever the camera thread ends.
    ``opener`` replaces how readers are opened (tests); ``rng`` makes the jitter reproducible.
    """

    def __init__(
        self,
        settings: CameraSettings,
        metrics: Metrics | None = None,
        *,
        queue: FrameQueue | None = None,
        on_frame: FrameCallback | None = None,
        on_state: StateCallback | None = None,
        opener: Opener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if queue is not None and on_frame is not None:
            raise ValueError("give a queue or an on_frame callback, not both")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.queue = queue if queue is not None or on_frame is not None else FrameQueue(
            settings.queue_size, settings.drop_policy, self.metrics
        )
        self._on_frame = on_frame
        self._on_state = on_state
        self._opener: Opener = opener or open_reader
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cell = StateCell(CameraState(camera=settings.name, since=time.time(), source=settings.display_source))
        self._seq = 0
        self._connections = 0
        self._down_mark: float | None = time.monotonic()
        self._error_log: dict[str, tuple[float, int]] = {}
        m, cam = self.metrics, settings.name
        self._m_decoded = m.frames_decoded.labels(cam)
        self._m_sampled = m.frames_sampled.labels(cam)
        self._m_up = m.stream_up.labels(cam)
        self._m_reconnects = m.reconnects.labels(cam)
        self._m_stalled = m.stalled_seconds.labels(cam)
        self._m_decode_s = m.stage_seconds.labels(cam, "decode")
        self._m_convert_s = m.stage_seconds.labels(cam, "convert")
        self._m_up.set(0)

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def state(self) -> CameraState:
        """The current state snapshot (thread-safe, immutable)."""
        return self._cell.get()

    def start(self) -> CameraSource:
        """Start the camera thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name!r} was already started")
        # Every line the camera thread logs (ours, PyAV's) carries camera=<name>.
        target = with_log_context(self._run, camera=self.name)
        self._thread = threading.Thread(target=target, name=f"streamd-camera-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the camera, aborting a blocked connect or read; True when its thread has ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._finish("stopped")
            return True
        ident = thread.ident
        if ident is not None and thread.is_alive():
            interrupt.interrupt(ident)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("camera %r: thread did not stop within %g s", self.name, timeout)
            return False
        if ident is not None:
            interrupt.clear(ident)  # the id may be reused by a new thread: it must not start interrupted
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the camera thread to end by itself (a file without loop); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ camera thread

    def _run(self) -> None:
        final = "stopped"
        try:
            if not self.settings.enabled:
                log.info("camera %r: disabled", self.name)
                return
            install_ok = interrupt.install()
            if not install_ok:
                log.debug("PyAV has no interruptible clock: stop waits for the read timeout")
            while not self._stop.is_set():
                if self._connect_and_stream():
                    final = "ended"
                    break
                if self._stop.is_set():
                    break
                self._wait_backoff()
        finally:
            self._finish(final)
            interrupt.clear(threading.get_ident())

    def _connect_and_stream(self) -> bool:
        """One connection, until it fails or the stop event; True when a file reached its end."""
        s = self.settings
        if self._connections:
            self._m_reconnects.inc()
        self._set(status="connecting", next_retry_at=None, mode=None, reconnects=self._connections)
        self._connections += 1
        sampler = Sampler(s.sample_fps)
        reader: VideoReader | None = None
        try:
            reader = self._opener(s, self._soft_error, self._stop)
            self._set(width=reader.width or None, height=reader.height or None)
            streaming = False
            for decoded in reader.frames():
                self._m_decoded.inc()
                self._m_decode_s.observe(decoded.decode_s)
                if not streaming:
                    streaming = True
                    self._went_up(reader)
                else:
                    self._track_mode(reader)
                if decoded.corrupt:
                    self._soft_error("corrupt", f"camera {s.name!r}: frame with decoding errors skipped")
                    sampler.skip(1 + decoded.unseen)  # the tracker's period still counts them
                    continue
                if sampler.offer(decoded.pts, decoded.unseen):
                    self._emit(decoded, sampler.skipped)
                reader.wanted_from = sampler.wanted_from  # frames before it may go undecoded
                if self._stop.is_set():
                    return False
            return not self._stop.is_set()
        except SourceError as exc:
            if exc.kind != "interrupted" and not self._stop.is_set():
                self._failed(str(exc), exc.kind)
            return False
        except Exception as exc:  # a bug or an unexpected library error: log it, keep the camera alive
            text = redact_text("".join(traceback.format_exception(exc)), s.url)
            log.error("camera %r: unexpected error, reconnecting:\n%s", self.name, text)
            self._failed(f"camera {self.name!r}: unexpected error: {redact_text(exc, s.url)}", "internal")
            return False
        finally:
            if reader is not None:
                reader.close()
            self._went_down()

    def _emit(self, decoded: Decoded, skipped: int) -> None:
        started = time.perf_counter()
        image = decoded.to_bgr()
        self._m_convert_s.observe(time.perf_counter() - started)
        now = time.time()
        frame = Frame(camera=self.name, seq=self._seq, pts=decoded.pts, captured_at=now, image=image, skipped=skipped)
        self._seq += 1
        self._m_sampled.inc()
        self._cell.update(last_frame_at=now)
        if self._on_frame is not None:
            try:
                self._on_frame(frame)
            except Exception:
                log.exception("camera %r: on_frame callback failed", self.name)
        elif self.queue is not None:
            if self.settings.is_realtime:
                self.queue.put(frame)
            else:
                self.queue.put_wait(frame, self._stop)  # a file read in batch: wait, lose nothing

    # ------------------------------------------------------------------ state changes

    def _went_up(self, reader: VideoReader) -> None:
        self._account_down(now_up=True)
        self._m_up.set(1)
        st = self._cell.get()
        if st.attempts:
            log.info("camera %r: streaming again after %d failed attempt(s)", self.name, st.attempts)
        self._error_log.clear()
        self._set(status="streaming", attempts=0, mode=reader.mode, keyframe_interval_s=reader.keyframe_interval,
                  width=reader.width or None, height=reader.height or None)

    def _track_mode(self, reader: VideoReader) -> None:
        st = self._cell.get()
        if reader.mode != st.mode or reader.keyframe_interval != st.keyframe_interval_s:
            self._set(mode=reader.mode, keyframe_interval_s=reader.keyframe_interval)

    def _went_down(self) -> None:
        self._m_up.set(0)
        if self._down_mark is None:
            self._down_mark = time.monotonic()

    def _account_down(self, now_up: bool = False) -> None:
        """Add the time since the camera went down to streamd_stalled_seconds_total."""
        if self._down_mark is not None:
            now = time.monotonic()
            self._m_stalled.inc(now - self._down_mark)
            self._down_mark = None if now_up else now

    def _failed(self, message: str, kind: str) -> None:
        self.metrics.stream_errors.labels(self.name, kind).inc()
        st = self._cell.get()
        attempts = st.attempts + 1
        level = logging.WARNING if attempts == 1 or message != st.last_error else logging.INFO
        log.log(level, "%s (attempt %d)", message, attempts)
        self._set(attempts=attempts, last_error=message, last_error_at=time.time())

    def _wait_backoff(self) -> None:
        st = self._cell.get()
        delay = backoff_delay(self.settings, max(1, st.attempts), self._rng)
        self._set(status="backoff", next_retry_at=time.time() + delay)
        self._stop.wait(delay)
        self._account_down()

    def _soft_error(self, kind: str, message: str) -> None:
        """A recoverable problem inside a stream: counted always, logged at most every 10 s per kind."""
        self.metrics.stream_errors.labels(self.name, kind).inc()
        now = time.monotonic()
        last, suppressed = self._error_log.get(kind, (float("-inf"), 0))
        if now - last >= _ERROR_LOG_INTERVAL_S:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("%s%s", redact_text(message, self.settings.url), more)
            self._error_log[kind] = (now, 0)
        else:
            self._error_log[kind] = (last, suppressed + 1)

    def _finish(self, status: str) -> None:
        self._account_down()
        self._m_up.set(0)
        self._set(status=status, next_retry_at=None)
        if self.queue is not None:
            self.queue.close()

    def _set(self, **changes: object) -> None:
        if "status" in changes and changes["status"] != self._cell.get().status:
            changes.setdefault("since", time.time())
        state, changed = self._cell.update(**changes)
        if changed and self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("camera %r: on_state callback failed", self.name)

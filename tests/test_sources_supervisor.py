"""The camera supervisor with hand-written fake readers: states, backoff, errors, shutdown."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from rtsp import camera_threads, wait_for

from streamd.errors import SourceError
from streamd.metrics import Metrics
from streamd.sources.config import CameraSettings
from streamd.sources.queues import END
from streamd.sources.reader import Decoded
from streamd.sources.state import CameraState
from streamd.sources.supervisor import CameraSource, backoff_delay

URL = "rtsp://admin:hunter22@cam.local/live"


def _settings(**kw: object) -> CameraSettings:
    base: dict = {"name": "cam", "url": URL, "sample_fps": 5, "backoff": {"initial_s": 0.01, "max_s": 0.05, "jitter": 0}}
    base.update(kw)
    return CameraSettings(**base)


class FakeReader:
    """Yields ``count`` frames at 25 fps, then ends (a file) or raises ``then`` (a live stream)."""

    def __init__(self, count: int = 10, then: Exception | None = None, corrupt: set[int] | None = None,
                 block: threading.Event | None = None) -> None:
        self.count, self.then, self.corrupt, self.block = count, then, corrupt or set(), block
        self.mode = "full"
        self.width, self.height = 8, 6
        self.keyframe_interval = 1.0
        self.wanted_from: float | None = None
        self.closed = False

    def frames(self) -> Iterator[Decoded]:
        for i in range(self.count):
            yield Decoded(i / 25, 0, i in self.corrupt, lambda: np.zeros((6, 8, 3), np.uint8))
        if self.block is not None:
            self.block.wait(10)
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


class ScriptedOpener:
    """Answers each open with the next item of ``script``: a reader, or an exception to raise."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls = 0

    def __call__(self, settings, on_error, stop):  # type: ignore[no-untyped-def]
        self.calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _no_leaked_camera_threads() -> Iterator[None]:
    yield
    assert wait_for(lambda: not camera_threads(), 5), f"leaked threads: {camera_threads()}"


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)],
)
def test_backoff_grows_exponentially_up_to_the_cap(attempts: int, expected: float) -> None:
    # given
    settings = _settings(backoff={"initial_s": 1, "max_s": 10, "multiplier": 2, "jitter": 0})

    # when / then
    assert backoff_delay(settings, attempts, random.Random(0)) == expected


def test_backoff_jitter_spreads_delays_within_the_fraction() -> None:
    # given
    settings = _settings(backoff={"initial_s": 10, "max_s": 10, "jitter": 0.2})
    rng = random.Random(1)

    # when
    delays = [backoff_delay(settings, 3, rng) for _ in range(200)]

    # then
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert max(delays) - min(delays) > 2.0


def test_a_failing_camera_backs_off_retries_forever_and_resumes_by_itself() -> None:
    # given a camera that refuses 6 connections, then streams
    refused = SourceError("camera 'cam': cannot open rtsp://admin:***@cam.local/live: Connection refused", "open")
    opener = ScriptedOpener([refused] * 6 + [FakeReader(count=10_000_000)])
    metrics = Metrics()
    states: list[CameraState] = []
    source = CameraSource(_settings(), metrics, on_state=states.append, opener=opener)

    # when
    source.start()
    streaming = wait_for(lambda: source.state.status == "streaming", 10)
    source.stop()

    # then
    assert streaming
    backoffs = [s for s in states if s.status == "backoff"]
    assert len(backoffs) == 6
    assert all(s.next_retry_at is not None and s.next_retry_at >= s.since for s in backoffs)
    assert [s.attempts for s in backoffs] == [1, 2, 3, 4, 5, 6]
    assert backoffs[-1].last_error == str(refused)
    up = next(s for s in states if s.status == "streaming")
    assert up.attempts == 0 and up.reconnects == 6 and up.mode == "full"
    assert _metric(metrics, "streamd_stream_errors_total", camera="cam", kind="open") == 6
    assert _metric(metrics, "streamd_reconnects_total", camera="cam") == 6
    assert states[-1].status == "stopped"


def test_a_file_without_loop_ends_and_the_queue_gets_the_end_marker() -> None:
    # given
    source = CameraSource(_settings(url="/videos/a.mp4"), opener=ScriptedOpener([FakeReader(count=25)]))

    # when
    source.start()
    frames = []
    while (item := source.queue.get(timeout=5)) is not END:  # type: ignore[union-attr]
        assert item is not None
        frames.append(item)

    # then
    assert source.join(5)
    assert source.state.status == "ended"
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert [round(f.pts, 2) for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_frames_with_decoding_errors_are_skipped_and_counted() -> None:
    # given frames 0 and 5 damaged
    metrics = Metrics()
    got = []
    source = CameraSource(_settings(url="/videos/a.mp4"), metrics, on_frame=got.append,
                          opener=ScriptedOpener([FakeReader(count=12, corrupt={0, 5})]))

    # when
    source.start()
    source.join(5)

    # then the next clean frames are sampled instead
    assert [round(f.pts, 2) for f in got] == [0.04, 0.24, 0.44]
    assert _metric(metrics, "streamd_stream_errors_total", camera="cam", kind="corrupt") == 2
    assert _metric(metrics, "streamd_frames_decoded_total", camera="cam") == 12


def test_stop_during_a_long_backoff_returns_at_once() -> None:
    # given a camera waiting 60 s before its next retry
    settings = _settings(backoff={"initial_s": 60, "max_s": 60})
    source = CameraSource(settings, opener=ScriptedOpener([SourceError("camera 'cam': down", "open")]))
    source.start()
    assert wait_for(lambda: source.state.status == "backoff", 5)

    # when
    stopped = source.stop(timeout=2)

    # then
    assert stopped
    assert source.state.status == "stopped" and source.state.next_retry_at is None
    assert source.queue.get(timeout=1) is END  # type: ignore[union-attr]


def test_an_unexpected_error_is_logged_without_the_password_and_the_camera_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a reader that crashes with an error quoting the camera URL, then a healthy one
    crash = FakeReader(count=3, then=RuntimeError(f"boom while reading {URL}"))
    opener = ScriptedOpener([crash, FakeReader(count=10_000_000)])
    source = CameraSource(_settings(), opener=opener)

    # when
    with caplog.at_level(logging.INFO, logger="streamd.sources"):
        source.start()
        assert wait_for(lambda: opener.calls >= 2 and source.state.status == "streaming", 10)
        source.stop()

    # then
    assert "hunter22" not in caplog.text
    assert "boom while reading rtsp://admin:***@cam.local/live" in caplog.text
    assert "hunter22" not in (source.state.last_error or "")
    assert crash.closed


def test_a_failing_state_callback_does_not_stop_the_camera(caplog: pytest.LogCaptureFixture) -> None:
    # given
    def broken(state: CameraState) -> None:
        raise ValueError("listener bug")

    source = CameraSource(_settings(), on_state=broken, opener=ScriptedOpener([FakeReader(count=10_000_000)]))

    # when
    source.start()
    streaming = wait_for(lambda: source.state.status == "streaming", 5)
    source.stop()

    # then
    assert streaming
    assert "on_state callback failed" in caplog.text


def test_a_disabled_camera_never_opens() -> None:
    # given
    opener = ScriptedOpener([FakeReader()])
    source = CameraSource(_settings(enabled=False), opener=opener)

    # when
    source.start()
    source.join(5)

    # then
    assert opener.calls == 0
    assert source.state.status == "stopped"
    assert source.queue.get(timeout=1) is END  # type: ignore[union-attr]


def test_queue_and_callback_are_exclusive() -> None:
    # given / when / then
    with pytest.raises(ValueError, match="give a queue or an on_frame callback, not both"):
        from streamd.sources.queues import FrameQueue

        CameraSource(_settings(), queue=FrameQueue(), on_frame=lambda f: None)


def test_stream_up_and_stalled_seconds_follow_the_outage() -> None:
    # given a stream that dies after a moment and stays down
    metrics = Metrics()
    release = threading.Event()
    dead = SourceError("camera 'cam': the stream ended", "eof")
    opener = ScriptedOpener([FakeReader(count=5, then=dead, block=release), SourceError("camera 'cam': refused", "open")])
    source = CameraSource(_settings(backoff={"initial_s": 0.05, "max_s": 0.05, "jitter": 0}), metrics, opener=opener)

    # when
    source.start()
    assert wait_for(lambda: source.state.status == "streaming", 5)
    up_while_streaming = _metric(metrics, "streamd_stream_up", camera="cam")
    release.set()
    assert wait_for(lambda: opener.calls >= 4, 5)
    down = _metric(metrics, "streamd_stream_up", camera="cam")
    source.stop()

    # then
    assert (up_while_streaming, down) == (1.0, 0.0)
    assert _metric(metrics, "streamd_stalled_seconds_total", camera="cam") > 0.1
    assert _metric(metrics, "streamd_stream_errors_total", camera="cam", kind="eof") == 1

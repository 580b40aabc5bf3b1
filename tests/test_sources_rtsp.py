"""RTSP cameras against a real RTSP server process (GStreamer) serving real H.264 made from real faces."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from rtsp import RtspServer, camera_threads, clip_720p, require_rtsp_server, wait_for  # noqa: F401 (clip_720p is a fixture)

from streamd.metrics import Metrics
from streamd.sources.config import CameraSettings
from streamd.sources.state import CameraState
from streamd.sources.supervisor import CameraSource
from streamd.types import Frame

pytestmark = pytest.mark.shared

PASSWORD = "Sup3r-s3cret"


@pytest.fixture(autouse=True)
def _no_leaked_camera_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert wait_for(lambda: not camera_threads(), 5), f"leaked threads: {camera_threads()}"
    assert wait_for(lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()], 5)


@pytest.fixture
def server(clip_720p: Path) -> Iterator[RtspServer]:
    require_rtsp_server()
    with RtspServer(clip_720p) as srv:
        yield srv


def _settings(url: str, **kw: object) -> CameraSettings:
    base: dict = {
        "name": "cam",
        "url": url,
        "sample_fps": 5,
        "connect_timeout_s": 5,
        "stall_timeout_s": 5,
        "backoff": {"initial_s": 0.5, "max_s": 2.0},
    }
    base.update(kw)
    return CameraSettings(**base)


class Recorder:
    """Collects a camera's frames and states."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.states: list[CameraState] = []

    def source(self, settings: CameraSettings, metrics: Metrics | None = None) -> CameraSource:
        return CameraSource(settings, metrics, on_frame=self.frames.append, on_state=self.states.append)


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_frames_flow_and_are_sampled_at_the_configured_fps(server: RtspServer, transport: str) -> None:
    # given
    metrics = Metrics()
    rec = Recorder()
    source = rec.source(_settings(server.url, transport=transport, detect_width=640), metrics).start()

    # when 3 s of samples arrive
    got = wait_for(lambda: len(rec.frames) >= 16, 15)
    source.stop()

    # then
    assert got, f"only {len(rec.frames)} frames; state {source.state}"
    frames = rec.frames[1:16]  # the first sample is wherever the stream was joined
    gaps = [b.pts - a.pts for a, b in pairwise(frames)]
    assert all(0.15 <= g <= 0.25 for g in gaps), gaps
    assert (frames[-1].pts - frames[0].pts) / (len(frames) - 1) == pytest.approx(0.2, abs=0.02)
    assert frames[0].image.shape == (360, 640, 3)
    assert [s.status for s in rec.states][:2] == ["connecting", "streaming"]
    assert rec.states[1].mode == "full"
    decoded = _metric(metrics, "streamd_frames_decoded_total", camera="cam")
    sampled = _metric(metrics, "streamd_frames_sampled_total", camera="cam")
    assert decoded >= 4 * sampled - 5  # 25 fps decoded for 5 fps sampled


def test_keyframe_mode_is_chosen_over_rtsp_and_decodes_far_fewer_frames(server: RtspServer) -> None:
    # given a stream with a keyframe every second, sampled once a second
    metrics = Metrics()
    rec = Recorder()
    source = rec.source(_settings(server.url, sample_fps=1), metrics).start()

    # when
    switched = wait_for(lambda: source.state.mode == "keyframes", 10)
    decoded_before, sampled_before = (_metric(metrics, f"streamd_frames_{k}_total", camera="cam") for k in ("decoded", "sampled"))
    time.sleep(3.0)
    decoded = _metric(metrics, "streamd_frames_decoded_total", camera="cam") - decoded_before
    sampled = _metric(metrics, "streamd_frames_sampled_total", camera="cam") - sampled_before
    source.stop()

    # then 3 s of 25 fps video decoded to about 3 frames, each of them sampled
    assert switched, source.state
    assert 2 <= decoded <= 5
    assert sampled == decoded
    assert source.state.keyframe_interval_s == pytest.approx(1.0, abs=0.05)


def _restart_and_recover(
    server: RtspServer, down_s: float, max_backoff_s: float, caplog: pytest.LogCaptureFixture, transport: str = "tcp"
) -> None:
    metrics = Metrics()
    rec = Recorder()
    url = server.url_with("admin", PASSWORD)
    settings = _settings(url, backoff={"initial_s": 0.5, "max_s": max_backoff_s}, stall_timeout_s=3, transport=transport)
    source = rec.source(settings, metrics).start()
    with caplog.at_level(logging.INFO, logger="streamd.sources"):
        assert wait_for(lambda: len(rec.frames) >= 5, 15), (source.state, server.proc and server.proc.poll(), server.log)

        # when the server goes away mid-stream and comes back after down_s
        server.stop()
        stopped_at = time.monotonic()
        assert wait_for(lambda: source.state.status == "backoff", 10)
        in_backoff = source.state
        time.sleep(max(0.0, down_s - (time.monotonic() - stopped_at)))
        frames_while_down = len(rec.frames)
        server.start()

        # then the camera comes back by itself
        back = wait_for(lambda: source.state.status == "streaming" and len(rec.frames) > frames_while_down + 5,
                        max_backoff_s * 1.5 + 15)
        source.stop()

    assert back, source.state
    assert in_backoff.next_retry_at is not None and in_backoff.next_retry_at > in_backoff.since - 0.01
    assert in_backoff.last_error is not None and in_backoff.attempts >= 1
    statuses = [s.status for s in rec.states]
    assert statuses.count("backoff") >= 2  # retried while down, never gave up
    assert statuses[-2:] == ["streaming", "stopped"]
    assert _metric(metrics, "streamd_reconnects_total", camera="cam") >= 2
    assert _metric(metrics, "streamd_stalled_seconds_total", camera="cam") >= down_s - 1
    # passwords never reach logs or state
    assert PASSWORD not in caplog.text
    assert "rtsp://admin:***@127.0.0.1" in caplog.text
    assert all(PASSWORD not in (s.last_error or "") and PASSWORD not in s.source for s in rec.states)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_the_camera_comes_back_by_itself_after_the_server_restarts_5_s_later(
    server: RtspServer, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    _restart_and_recover(server, down_s=5.0, max_backoff_s=2.0, caplog=caplog, transport=transport)


@pytest.mark.slow
def test_the_camera_comes_back_by_itself_after_the_server_restarts_60_s_later(
    server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    _restart_and_recover(server, down_s=60.0, max_backoff_s=10.0, caplog=caplog)


def test_stop_interrupts_a_read_stuck_on_a_silent_server(server: RtspServer) -> None:
    # given a streaming camera with a long stall timeout, and a server that freezes (socket open, no data)
    rec = Recorder()
    source = rec.source(_settings(server.url, stall_timeout_s=120)).start()
    assert wait_for(lambda: len(rec.frames) >= 3, 15), source.state
    server.pause()
    time.sleep(1.0)  # the camera thread is now blocked inside FFmpeg's read

    # when
    started = time.monotonic()
    stopped = source.stop(timeout=10)
    took = time.monotonic() - started

    # then
    assert stopped and took < 2.0, took
    assert source.state.status == "stopped"


def test_stop_interrupts_a_connect_to_a_server_that_never_answers() -> None:
    # given a TCP listener that accepts and stays silent (a hung camera)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    source = CameraSource(_settings(f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live", connect_timeout_s=120)).start()
    assert wait_for(lambda: source.state.status == "connecting", 5)
    time.sleep(1.0)

    # when
    started = time.monotonic()
    stopped = source.stop(timeout=10)
    took = time.monotonic() - started
    listener.close()

    # then
    assert stopped and took < 2.0, took


def test_a_silent_stream_is_declared_stalled_and_recovers_when_it_resumes(server: RtspServer) -> None:
    # given
    metrics = Metrics()
    rec = Recorder()
    source = rec.source(_settings(server.url, stall_timeout_s=2), metrics).start()
    assert wait_for(lambda: len(rec.frames) >= 3, 15), source.state

    # when the server is frozen for longer than the stall timeout, then resumes
    server.pause()
    stalled = wait_for(lambda: source.state.status == "backoff", 10)
    error = source.state.last_error
    server.resume()
    count = len(rec.frames)
    back = wait_for(lambda: source.state.status == "streaming" and len(rec.frames) > count + 3, 20)
    source.stop()

    # then
    assert stalled and back, source.state
    assert error == f"camera 'cam': read failed {server.url}: no answer within 2 s"
    assert _metric(metrics, "streamd_stream_errors_total", camera="cam", kind="stall") >= 1


def test_a_wrong_path_is_a_clear_error_without_the_password(server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    # given
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{server.port}/nothing-here"
    source = CameraSource(_settings(url, backoff={"initial_s": 30, "max_s": 30}))

    # when
    with caplog.at_level(logging.INFO, logger="streamd.sources"):
        source.start()
        wait_for(lambda: source.state.status == "backoff", 10)
        state = source.state
        source.stop()

    # then
    assert state.last_error is not None
    assert state.last_error.startswith(f"camera 'cam': cannot open rtsp://admin:***@127.0.0.1:{server.port}/nothing-here: ")
    assert PASSWORD not in caplog.text and PASSWORD not in state.last_error

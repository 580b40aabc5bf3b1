"""HTTP/HLS cameras through PyAV, against a real HTTP server on loopback serving HLS made by ffmpeg."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import pytest
from rtsp import camera_threads, clip_720p, wait_for  # noqa: F401 (clip_720p is a fixture)

from streamd.metrics import Metrics
from streamd.sources.config import CameraSettings
from streamd.sources.supervisor import CameraSource
from streamd.types import Frame

pytestmark = pytest.mark.shared


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hls_url(clip_720p: Path, tmp_path: Path) -> Iterator[str]:
    """A VOD HLS playlist (1 s segments of the real clip) served over HTTP on 127.0.0.1."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(clip_720p), "-c", "copy", "-f", "hls", "-hls_time", "1",
         "-hls_list_size", "0", "-hls_playlist_type", "vod", str(tmp_path / "live.m3u8")],
        check=True,
        timeout=60,
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, name="hls-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/live.m3u8"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_leaked_camera_threads() -> Iterator[None]:
    yield
    assert wait_for(lambda: not camera_threads(), 5), f"leaked threads: {camera_threads()}"


def test_an_hls_stream_is_read_sampled_and_reconnected_when_it_ends(hls_url: str) -> None:
    # given a 6 s VOD playlist read as a camera: at its end the "camera" is gone and is retried
    metrics = Metrics()
    frames: list[Frame] = []
    url = hls_url.replace("http://", "http://viewer:hls-secret@")
    settings = CameraSettings(name="hls", url=url, sample_fps=5, backoff={"initial_s": 30, "max_s": 30})
    source = CameraSource(settings, metrics, on_frame=frames.append).start()

    # when
    ended = wait_for(lambda: source.state.status == "backoff", 30)
    state = source.state
    source.stop()

    # then the whole playlist was sampled at 5 fps by timestamp
    assert ended, state
    assert len(frames) == 30
    gaps = {round(b.pts - a.pts, 3) for a, b in pairwise(frames)}
    assert gaps == {0.2}
    assert state.last_error == "camera 'hls': the stream ended (the server closed it)"
    assert "hls-secret" not in state.source and state.source.startswith("http://viewer:***@127.0.0.1:")
    assert metrics.registry.get_sample_value("streamd_stream_errors_total", {"camera": "hls", "kind": "eof"}) == 1.0

"""Test helpers for video sources: a real RTSP server process and H.264 clips made from real faces.

``RtspServer`` runs tools/rtsp_server.py (GStreamer's RTSP server, Debian packages) on a free
loopback port; it can be paused (SIGSTOP: the socket stays open but silent, a stuck read),
stopped and restarted on the same port. Skips when GStreamer's RTSP server is not installed,
except under CI=true where that is a failure.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, free_port

SERVER_SCRIPT = PROJECT_ROOT / "tools" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
HAMILTON = Path("video/faces/ageitgey_short_hamilton_clip.mp4")


def require_rtsp_server() -> None:
    """Skip (or fail under CI) unless GStreamer's RTSP server and PyGObject are installed."""
    code = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    probe = (
        subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, check=False)
        if os.path.exists(SYSTEM_PYTHON)
        else None
    )
    if probe is not None and probe.returncode == 0:
        return
    message = (
        "GStreamer's RTSP server is not installed (apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 "
        "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


class RtspServer:
    """tools/rtsp_server.py serving ``file`` at ``rtsp://127.0.0.1:<port>/live``."""

    def __init__(self, file: Path, port: int | None = None, path: str = "/live") -> None:
        self.file = Path(file)
        self.port = port or free_port()
        self.path = path
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def url_with(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 15.0) -> RtspServer:
        """Start the server and wait for its ``ready`` line (retrying while the port is still held)."""
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--file", str(self.file), "--port", str(self.port),
                 "--path", self.path],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            line = self._read_line(deadline)
            if line.startswith("ready"):
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return self
            self.proc.wait(5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start: {line!r} {self.log}")
            time.sleep(0.3)  # e.g. the port of a just-stopped server is not free yet

    def _read_line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return ""
                self.log.append(line.rstrip())
                return line.strip()
        return ""

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line.rstrip())

    def stop(self) -> None:
        """Terminate the server (clients see the connection close)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def ensure_running(self) -> RtspServer:
        """Start the server again (same port, same URL) if its process has ended, saying why on stderr.

        Module-scoped servers outlive single tests; one that died (once, under heavy load in CI)
        must not fail every later test of the module with "connection refused".
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test that paused it may have failed before resuming
            if self.answers():
                return self
            tail = "\n".join(self.log[-20:])
            print(f"RTSP server on port {self.port} is running but does not answer DESCRIBE; restarting it. "
                  f"Last output:\n{tail}", file=sys.stderr)
            self.stop()
            return self.start()
        code = None if self.proc is None else self.proc.returncode
        tail = "\n".join(self.log[-20:])
        print(f"RTSP server on port {self.port} had ended (exit code {code}); restarting it. Last output:\n{tail}",
              file=sys.stderr)
        self.proc = None
        return self.start()

    def answers(self, timeout: float = 10.0) -> bool:
        """True when the server answers an RTSP DESCRIBE of its stream with 200 OK (its media prepared)."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.settimeout(timeout)
                conn.sendall(request)
                return conn.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def pause(self) -> None:
        """Freeze the server: connections stay open but no data flows (a read blocks)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; answers its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def camera_threads() -> list[threading.Thread]:
    """Live camera threads (they are named streamd-camera-<name>)."""
    return [t for t in threading.enumerate() if t.name.startswith("streamd-camera-")]


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/rtsp.py FILE
    with RtspServer(Path(sys.argv[1])) as server:
        print(server.url)
        signal.pause()


# ---------------------------------------------------------------------------- clips


def make_clip(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, name: str, **kwargs: object) -> Path:
    """An H.264 clip re-encoded from the real Hamilton clip, cached by ``name`` and parameters.

    The cache is a folder of the system temp dir, not pytest's basetemp: a concurrent pytest run
    prunes old basetemps, which would delete a clip an RTSP server of this run is serving.
    """
    from streamd.sources.clips import encode_h264

    source = faces_dir / HAMILTON
    key = hashlib.sha1(repr((sorted(kwargs.items()), source.stat().st_size, source.stat().st_mtime_ns)).encode())
    folder = Path(tempfile.gettempdir()) / f"streamd-test-clips-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    path = folder / f"{key.hexdigest()[:12]}-{name}"
    if not path.exists():
        partial = tmp_path_factory.mktemp("clip") / name
        encode_h264(source, partial, **kwargs)  # type: ignore[arg-type]
        os.replace(partial, path)  # atomic: a concurrent run sees the whole clip or none
    return path


@pytest.fixture(scope="session")
def clip_720p(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    """6 s of 1280x720 25 fps H.264 with a keyframe every 25 frames (1 s), from real faces."""
    return make_clip(tmp_path_factory, faces_dir, "hamilton-720p-gop25.mp4", seconds=6.0)

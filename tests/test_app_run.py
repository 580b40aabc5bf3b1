"""`streamd run --config FILE` as a real process: serves until SIGTERM/SIGINT, then drains and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port
from rtsp import wait_for
from streams import LaneScene, engine_settings, lane_scene  # noqa: F401 (fixtures)

from streamd.settings import EngineSettings

pytestmark = pytest.mark.shared


def write_config(tmp_path: Path, engine: EngineSettings, scene: LaneScene, port: int, **extra: object) -> Path:
    config = {
        "engine": engine.model_dump(mode="json"),
        "index": {"dir": str(scene.index_dir)},
        "mqtt": {"enabled": False},
        "http": {"port": port},
        "snapshots": {"dir": str(tmp_path / "snapshots")},
        "pipeline": {"stop_timeout_s": 10},
        "cameras": [{"name": "hall", "url": str(scene.clip.path), "loop": True}],
        **extra,
    }
    path = tmp_path / "streamd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamd", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def identified(base: str) -> list[dict]:
    try:
        reply = httpx.get(f"{base}/api/events/recent", params={"type": "identified"}, timeout=2)
    except httpx.HTTPError:
        return []
    return reply.json()["events"] if reply.status_code == 200 else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_serves_until_a_signal_then_drains_and_exits_cleanly(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene, sig: signal.Signals  # noqa: F811
) -> None:
    # given the daemon running on a looping file camera
    port = free_port()
    proc = start(write_config(tmp_path, engine_settings, lane_scene, port))
    base = f"http://127.0.0.1:{port}"
    try:
        # when it has named someone, it gets the signal
        named = wait_for(lambda: proc.poll() is not None or bool(identified(base)), 60, interval=0.5)
        named = named and proc.poll() is None
        proc.send_signal(sig)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # then it had served events, and it stopped cleanly within the drain timeout
    assert named, stderr[-2000:]
    assert proc.returncode == 0, stderr[-2000:]
    assert took < 15
    assert "stopped cleanly" in stderr


def test_run_refuses_a_config_with_an_unknown_key_naming_it(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene  # noqa: F811
) -> None:
    # given a pipeline section with a typo
    config = write_config(tmp_path, engine_settings, lane_scene, free_port(), pipeline={"worker": 2})
    # when
    proc = start(config)
    _, stderr = proc.communicate(timeout=60)
    # then exit status 2 and one line naming the key
    assert proc.returncode == 2
    assert f"{config}: pipeline.worker: unknown key" in stderr

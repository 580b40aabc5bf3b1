"""`streamd run` as a subprocess, as systemd runs it: notify socket, signals, a real mosquitto and RTSP server.

- SIGHUP with a changed camera list: only the changed camera restarts (its state, its MQTT status
  history and the logs say so), the removed one stops, the added one starts; RELOADING/READY.
- The watchdog: pings flow while healthy and stop while the main loop is wedged (test hook).
- SIGTERM during traffic: every event the daemon produced, including the `end` events of the
  drain, reached the broker or the on-disk spool (broker up, and broker down at the signal).
- Configs with each kind of error: exit 2 and a message naming the key; a missing model: exit 3.

Engine: onnx (YuNet + MobileFaceNet); the cameras watch the four-lane scene of real faces
(tests/streams.py: two people enrolled, two not) served by GStreamer's RTSP server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import free_port
from mosquitto import Mosquitto, Subscriber
from notify_socket import NotifySocket
from rtsp import RtspServer, require_rtsp_server, wait_for
from streams import LaneScene, engine_settings, lane_scene  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.shared]



# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine(engine_settings) -> dict[str, Any]:  # noqa: F811
    return engine_settings.model_dump(mode="json")


@pytest.fixture(scope="module")
def index_dir(lane_scene: LaneScene) -> Path:  # noqa: F811
    return lane_scene.index_dir


@pytest.fixture(scope="module")
def rtsp_server(lane_scene: LaneScene):  # noqa: F811
    """The four-lane scene (two people enrolled, two not) served like an IP camera, looping."""
    require_rtsp_server()
    with RtspServer(lane_scene.clip.path) as server:
        yield server


@pytest.fixture
def rtsp(rtsp_server: RtspServer) -> RtspServer:
    """The module's RTSP server, running (restarted if it ended during an earlier test)."""
    return rtsp_server.ensure_running()


@pytest.fixture
def broker(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """`python -m streamd run --config FILE` with JSON logs in a file and a notify socket of the test's own."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "streamd.yaml"
        self.log_path = workdir / "daemon.log"
        self.http_port = config.get("http", {}).get("port")
        self.write_config(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMD_", "NOTIFY_", "WATCHDOG_"))}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> Daemon:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamd", "run", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
        )
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def messages(self) -> list[str]:
        return [r["msg"] for r in self.records()]

    def cameras(self) -> dict[str, dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/api/cameras", timeout=5) as response:
            body = json.loads(response.read())
        items = body.get("cameras", body) if isinstance(body, dict) else body
        return {c["camera"]: c for c in items}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def base_config(tmp_path: Path, engine, index_dir: Path, broker: Mosquitto | None) -> dict[str, Any]:
    return {
        "engine": engine,
        "index": {"dir": str(index_dir), "watch": False},
        "http": {"port": free_port()},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "client_id": f"streamd-test-{os.getpid()}",
                 "spool_dir": str(tmp_path / "spool"), "discovery": False} if broker else {"enabled": False},
        "snapshots": {"dir": str(tmp_path / "snapshots")},
        "pipeline": {"workers": 1, "stop_timeout_s": 15},
        "log": {"format": "json", "levels": {"streamd.events": "debug"}},
        "cameras": [],
    }


def camera(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "sample_fps": 2, "connect_timeout_s": 10, **extra}


def statuses(sub: Subscriber, name: str) -> list[str]:
    return [json.loads(m.payload)["state"] for m in sub.on(f"streamd/{name}/status") if m.payload]


# --------------------------------------------------------------------------- SIGHUP and the watchdog


def test_sighup_restarts_only_the_changed_camera_and_the_watchdog_stops_while_wedged(
    tmp_path, engine, index_dir, rtsp, broker
):
    # given a daemon under a notify socket with a 2 s watchdog, watching three cameras
    sock = NotifySocket(tmp_path)
    wedge = tmp_path / "wedge"
    config = base_config(tmp_path, engine, index_dir, broker)
    config["cameras"] = [camera("keep", rtsp.url), camera("change", rtsp.url), camera("drop", rtsp.url)]
    env = {**sock.env, "WATCHDOG_USEC": "2000000", "STREAMD_TEST_WEDGE_FILE": str(wedge)}
    status_sub = Subscriber(broker, ["streamd/+/status"])
    with Daemon(tmp_path, config, env) as daemon:
        sock.wait_for(lambda m: m.get("READY") == "1", 60)
        sock.wait_for(lambda m: m.get("STATUS") == "3/3 cameras streaming", 30)
        before = daemon.cameras()
        assert before["keep"]["status"] == "streaming"

        # when the camera list changes: 'change' samples slower, 'drop' goes, 'added' comes
        config["cameras"] = [
            camera("keep", rtsp.url), camera("change", rtsp.url, sample_fps=1), camera("added", rtsp.url)
        ]
        daemon.write_config(config)
        reloaded_at = time.time()
        n_ready = len(sock.with_key("READY"))
        daemon.signal(signal.SIGHUP)

        # then systemd hears RELOADING then READY, and the cameras stream again
        sock.wait_for(lambda m: m.get("RELOADING") == "1", 10)
        assert wait_for(lambda: len(sock.with_key("READY")) > n_ready, 30)
        assert wait_for(lambda: [c["status"] for c in daemon.cameras().values()] == ["streaming"] * 3, 30)
        after = daemon.cameras()
        assert list(after) == ["keep", "change", "added"]
        # 'keep' never reconnected: same state since before the reload
        assert after["keep"]["since"] == before["keep"]["since"]
        assert after["keep"]["reconnects"] == before["keep"]["reconnects"]
        assert after["change"]["since"] >= reloaded_at and after["added"]["since"] >= reloaded_at
        assert any("reload done: added: added; removed: drop; changed: change" in m for m in daemon.messages())
        assert statuses(status_sub, "keep").count("connecting") == 1
        assert statuses(status_sub, "change").count("connecting") == 2
        assert statuses(status_sub, "drop")[-1] == "stopped"

        # when the main loop is wedged for 5 s (pings are due every second)
        assert wait_for(lambda: len(sock.with_key("WATCHDOG")) >= 2, 10)
        wedge.touch()
        time.sleep(0.5)
        wedged_at = time.monotonic()
        time.sleep(4.5)
        released_at = time.monotonic()
        wedge.unlink()
        # then no ping came while wedged, and they resume after
        assert wait_for(lambda: any(t > released_at for t, m in sock.timed() if "WATCHDOG" in m), 10)
        assert not [t for t, m in sock.timed() if "WATCHDOG" in m and wedged_at < t < released_at]

        # when SIGTERM
        daemon.signal(signal.SIGTERM)
        # then a clean stop
        assert daemon.wait(30) == 0
        assert sock.with_key("STOPPING")
    status_sub.client.loop_stop()
    sock.close()


# --------------------------------------------------------------------------- SIGTERM during traffic


def _spooled_event_ids(spool_dir: Path) -> set[str]:
    from streamd.sinks.spool import Spool

    spool = Spool(spool_dir, max_bytes=1 << 30, max_age_s=1e9)
    try:
        return {r.payload["event_id"] for r in spool.open() if isinstance(r.payload, dict) and "event_id" in r.payload}
    finally:
        spool.close()


@pytest.mark.parametrize("broker_at_signal", ["up", "down"])
def test_sigterm_during_traffic_loses_no_event(tmp_path, engine, index_dir, rtsp, broker, broker_at_signal):
    # given a daemon whose camera produces events, and a subscriber on the events topic
    config = base_config(tmp_path, engine, index_dir, broker)
    config["cameras"] = [camera("door", rtsp.url, sample_fps=5)]
    sub = Subscriber(broker, ["streamd/events"])
    with Daemon(tmp_path, config) as daemon:
        # an enrolled person named, and tracks open: traffic of every kind
        identified = lambda msgs: any(json.loads(m.payload)["type"] == "identified" for m in msgs)  # noqa: E731
        assert sub.wait_for(identified, 90), daemon.log_path.read_text()[-3000:]
        if broker_at_signal == "down":
            broker.stop()
            time.sleep(2.0)  # events keep coming while the broker is away
        # when SIGTERM arrives during traffic
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(40)
    time.sleep(0.5)
    sub.client.loop_stop()
    # then the drain ended cleanly
    assert code == 0, daemon.log_path.read_text()[-3000:]
    produced = {r["event_id"]: r for r in daemon.records() if r.get("logger") == "streamd.events"}
    received = {json.loads(m.payload)["event_id"] for m in sub.on("streamd/events")}
    spooled = _spooled_event_ids(tmp_path / "spool")
    kinds = sorted(r["event"] for r in produced.values())
    print(f"broker {broker_at_signal}: produced {len(produced)} {kinds}, received {len(received)}, spooled {len(spooled)}")
    # and every produced event reached the broker or the spool
    assert produced, "no event was produced"
    missing = set(produced) - received - spooled
    assert not missing, [produced[e] for e in missing]
    # and every track that started got its `end` in the drain
    started = {(r["camera"], r["track_id"]) for r in produced.values() if r["event"] == "new"}
    ended = {(r["camera"], r["track_id"]) for r in produced.values() if r["event"] == "end"}
    assert started and started <= ended
    if broker_at_signal == "down":
        assert spooled, "with the broker down, the drain's events must be in the spool"


# --------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("mqtt: {hostname: broker.lan}\n", 2, "streamd.yaml: mqtt.hostname: unknown key"),
        ("http: {port: eighty}\n", 2, "streamd.yaml: http.port: Input should be a valid integer"),
        ("pipeline: {stop_timeout_s: 0}\n", 2, "streamd.yaml: pipeline.stop_timeout_s: Input should be greater than 0"),
        ("cameras: [{name: door}]\n", 2, "streamd.yaml: cameras.0: Value error, camera 'door': give exactly one of url"),
        ("cameras: [{name: 'front door', url: 'rtsp://h/x'}]\n", 2, "streamd.yaml: cameras.0.name: Value error, camera name 'front door'"),
        ("mqtt: {username: bob}\n", 2, "streamd.yaml: mqtt: Value error, username is set without a password"),
        ("log: {level: loud}\n", 2, "streamd.yaml: log.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical'"),
        ("cameras: [\n", 2, "streamd.yaml: invalid YAML at line 4, column 1"),  # after the 2 lines written first
        ("mqtt: {username: bob, password_file: /nonexistent/mqtt_password}\n", 2,
         "mqtt.password_file /nonexistent/mqtt_password: cannot read the password"),
        ("engine: {embedder: {type: onnx, model_path: /nonexistent/face.onnx}}\n", 3, "/nonexistent/face.onnx"),
    ],
)
def test_a_bad_config_exits_with_its_code_and_names_the_key(tmp_path, text, code, message):
    # given a config with one problem (and the rest valid: a free port, a private index dir)
    path = tmp_path / "streamd.yaml"
    path.write_text(f"index: {{dir: {tmp_path / 'index'}}}\nhttp: {{port: {free_port()}}}\n" + text)
    # when
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMD_")},
    )
    # then
    assert result.returncode == code, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_exits_2(tmp_path):
    # when
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "run", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    # then
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: config file not found" in result.stderr

"""The main loop: READY/STATUS/WATCHDOG/RELOADING/STOPPING as sent, real signals, exit codes (fake app)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from notify_socket import NotifySocket
from streamd.errors import ConfigError, EngineUnavailable, ModelError
from streamd.service import Service, start_hint, status_line
from streamd.sources.state import CameraState


class FakeApp:
    """Records calls; cameras and health are set by the test."""

    def __init__(self, states=None, *, start_error: BaseException | None = None, start_delay: float = 0.0) -> None:
        self.states = list(states or [])
        self.start_error = start_error
        self.start_delay = start_delay
        self.calls: list[str] = []
        self.healthy = True
        self.beat = time.monotonic()
        self.frozen = False
        self.drained = True

    def heartbeat(self) -> float:
        if not self.frozen:
            self.beat = time.monotonic()
        return self.beat

    def start(self) -> FakeApp:
        self.calls.append("start")
        deadline = time.monotonic() + self.start_delay
        while time.monotonic() < deadline:  # a model loading: interruptible by signals
            time.sleep(0.01)
        if self.start_error is not None:
            raise self.start_error
        return self

    def stop(self, timeout=None) -> bool:
        self.calls.append(f"stop({timeout:g})")
        return self.drained

    def camera_states(self):
        return list(self.states)


class FakeReloader:
    def __init__(self) -> None:
        self.count = 0

    def reload(self):
        self.count += 1


def up(name: str) -> CameraState:
    return CameraState(camera=name, status="streaming")


def down(name: str, status: str = "backoff") -> CameraState:
    return CameraState(camera=name, status=status)  # type: ignore[arg-type]


@pytest.fixture
def sock(tmp_path):
    with NotifySocket(tmp_path) as s:
        yield s


def later(delay: float, fn, *args) -> threading.Timer:
    timer = threading.Timer(delay, fn, args)
    timer.daemon = True
    timer.start()
    return timer


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


def test_ready_after_start_then_stopping_on_sigterm(sock):
    # given a service with two cameras, one streaming, one in backoff
    app = FakeApp([up("door"), down("garage")])
    service = Service.from_env(sock.env, stop_timeout_s=7)
    # when SIGTERM arrives while it serves
    later(0.5, kill_self, signal.SIGTERM)
    code = service.run(lambda: app)
    # then STATUS while starting, READY with the camera status after start, a drain with more time
    assert code == 0
    assert app.calls == ["start", "stop(7)"]
    sock.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m, 2.0)
    assert sock.messages == [
        {"STATUS": "starting: loading the engine and the index"},
        {"READY": "1", "STATUS": "1/2 cameras streaming; down: garage (backoff)"},
        {"STOPPING": "1", "STATUS": "stopping (SIGTERM): draining for up to 7 s"},
        {"EXTEND_TIMEOUT_USEC": "12000000"},
    ]


def test_status_follows_the_cameras(sock):
    # given a serving daemon whose camera goes down, then comes back
    app = FakeApp([up("door"), up("yard")])
    service = Service.from_env(sock.env)

    def change(states):
        app.states = states

    later(0.3, change, [up("door"), down("yard", "connecting")])
    later(1.6, change, [up("door"), up("yard")])
    later(2.9, kill_self, signal.SIGINT)
    # when
    code = service.run(lambda: app)
    # then each change is one STATUS line
    assert code == 0
    sock.wait_for(lambda m: "STOPPING" in m, 2.0)
    statuses = [m["STATUS"] for m in sock.messages if "STATUS" in m and "READY" not in m and "STOPPING" not in m]
    assert statuses[1:] == ["1/2 cameras streaming; down: yard (connecting)", "2/2 cameras streaming"]


def test_watchdog_pings_stop_while_the_main_loop_is_wedged(sock, tmp_path):
    # given a 0.4 s watchdog (pings every 0.2 s) and the wedge test hook
    wedge = tmp_path / "wedge"
    env = {**sock.env, "WATCHDOG_USEC": "400000", "STREAMD_TEST_WEDGE_FILE": str(wedge)}
    app = FakeApp([up("door")])
    service = Service.from_env(env)
    # when the main loop is wedged from 1 s to 2.5 s
    later(1.0, wedge.touch)
    later(2.5, wedge.unlink)
    later(3.5, kill_self, signal.SIGTERM)
    t0 = time.monotonic()
    code = service.run(lambda: app)
    # then pings flow before and after, and none while wedged
    sock.wait_for(lambda m: "STOPPING" in m, 2.0)
    pings = [t - t0 for t, m in sock.timed() if "WATCHDOG" in m]
    assert code == 0
    assert any(p < 1.0 for p in pings) and any(p > 2.6 for p in pings)
    assert not [p for p in pings if 1.3 < p < 2.45]
    assert max(b - a for a, b in zip(pings, pings[1:])) > 1.2


def test_watchdog_pings_stop_when_the_pipeline_heartbeat_stalls(sock):
    # given a 0.4 s watchdog; the heartbeat may be 0.2 s old
    env = {**sock.env, "WATCHDOG_USEC": "400000"}
    app = FakeApp([up("door")])
    service = Service.from_env(env)

    def freeze(value: bool) -> None:
        app.frozen = value

    # when the pipeline stops beating from 1 s to 2.5 s while the main loop keeps ticking
    later(1.0, freeze, True)
    later(2.5, freeze, False)
    later(3.5, kill_self, signal.SIGTERM)
    t0 = time.monotonic()
    service.run(lambda: app)
    # then no ping while stalled, STATUS says why, pings resume
    sock.wait_for(lambda m: "STOPPING" in m, 2.0)
    pings = [t - t0 for t, m in sock.timed() if "WATCHDOG" in m]
    assert not [p for p in pings if 1.4 < p < 2.45]
    assert any(p > 2.6 for p in pings)
    unhealthy = [m["STATUS"] for m in sock.messages if m.get("STATUS", "").startswith("UNHEALTHY")]
    assert unhealthy and unhealthy[0].startswith("UNHEALTHY: the pipeline made no progress for ")
    assert unhealthy[0].endswith("; 1/1 cameras streaming")


def test_a_dead_worker_stops_the_pings(sock):
    # given a 0.4 s watchdog and an app whose recognition worker died
    env = {**sock.env, "WATCHDOG_USEC": "400000"}
    app = FakeApp([up("door")])
    app.healthy = False
    later(1.0, kill_self, signal.SIGTERM)
    # when
    Service.from_env(env).run(lambda: app)
    # then
    sock.wait_for(lambda m: "STOPPING" in m, 2.0)
    assert sock.with_key("WATCHDOG") == []
    assert sock.messages[1]["STATUS"] == "UNHEALTHY: a recognition worker stopped; 1/1 cameras streaming"


def test_sighup_reloads_between_reloading_and_ready(sock):
    # given
    app = FakeApp([up("door")])
    reloader = FakeReloader()
    service = Service.from_env(sock.env)
    # when SIGHUP arrives twice, then SIGTERM
    later(0.4, kill_self, signal.SIGHUP)
    later(0.8, kill_self, signal.SIGHUP)
    later(1.2, kill_self, signal.SIGTERM)
    code = service.run(lambda: app, make_reloader=lambda a: reloader)
    # then
    assert code == 0
    assert reloader.count == 2
    sock.wait_for(lambda m: "STOPPING" in m, 2.0)
    keys = [next(k for k in ("RELOADING", "READY", "STOPPING") if k in m) for m in sock.messages
            if {"RELOADING", "READY", "STOPPING"} & m.keys()]
    assert keys == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
    reloading = sock.with_key("RELOADING")[0]
    assert int(reloading["MONOTONIC_USEC"]) > 0


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (ConfigError("streamd.yaml: mqtt.port: Input should be less than or equal to 65535"), 2,
         "failed to start: streamd.yaml: mqtt.port: Input should be less than or equal to 65535"),
        (EngineUnavailable("engine.detector: onnx needs onnxruntime: pip install 'streamd[onnx]'"), 3,
         "failed to start: engine.detector: onnx needs onnxruntime: pip install 'streamd[onnx]'"),
        (ModelError("engine.embedder.model_path: /var/lib/streamd/models/x.onnx: no such file"), 3,
         "failed to start: engine.embedder.model_path: /var/lib/streamd/models/x.onnx: no such file"),
        (RuntimeError("http: port 8750 in use"), 1, "failed to start: http: port 8750 in use"),
    ],
)
def test_start_failures_exit_with_their_code(sock, error, code, status):
    # given an app whose start fails
    app = FakeApp(start_error=error)
    # when
    got = Service.from_env(sock.env).run(lambda: app)
    # then no READY, the reason in STATUS
    assert got == code
    sock.wait_for(lambda m: m.get("STATUS", "").startswith("failed"), 2.0)
    assert sock.messages[-1] == {"STATUS": status}
    assert sock.with_key("READY") == []


def test_sigterm_during_a_slow_start_stops_cleanly(sock):
    # given an app that takes 5 s to start (models loading)
    app = FakeApp([up("door")], start_delay=5.0)
    later(0.3, kill_self, signal.SIGTERM)
    t0 = time.monotonic()
    # when
    code = Service.from_env(sock.env, stop_timeout_s=3).run(lambda: app)
    # then the start is abandoned at once, the app stopped, never READY
    assert code == 0
    assert time.monotonic() - t0 < 3.0
    assert app.calls == ["start", "stop(3)"]
    assert sock.with_key("READY") == []


def test_a_drain_that_times_out_exits_1(sock):
    # given an app that cannot drain in time
    app = FakeApp([up("door")])
    app.drained = False
    later(0.3, kill_self, signal.SIGTERM)
    # when
    code = Service.from_env(sock.env).run(lambda: app)
    # then
    assert code == 1


def test_signal_handlers_are_restored():
    # given the handlers before
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    app = FakeApp([])
    later(0.2, kill_self, signal.SIGTERM)
    # when
    Service.from_env({}).run(lambda: app)
    # then
    assert {s: signal.getsignal(s) for s in before} == before


def test_request_stop_from_another_thread(sock):
    # given a service run without signal handlers (embedded use)
    app = FakeApp([up("a")])
    service = Service.from_env(sock.env, install_signals=False)
    later(0.3, service.request_reload)
    later(0.6, service.request_stop)
    # when
    code = service.run(lambda: app, make_reloader=lambda a: FakeReloader())
    # then
    assert code == 0
    assert service.reloads == 1


@pytest.mark.parametrize(
    ("states", "problem", "line"),
    [
        ([], None, "no cameras enabled"),
        ([up("a"), CameraState(camera="b", status="stopped")], None, "1/1 cameras streaming"),
        ([up("a"), down("b"), down("c", "connecting"), CameraState(camera="f", status="ended")], None,
         "1/4 cameras streaming; down: b (backoff), c (connecting); ended: f"),
        ([down(f"c{i}") for i in range(6)], None,
         "0/6 cameras streaming; down: c0 (backoff), c1 (backoff), c2 (backoff), c3 (backoff) +2 more"),
        ([up("a")], "a recognition worker stopped", "UNHEALTHY: a recognition worker stopped; 1/1 cameras streaming"),
    ],
)
def test_status_line(states, problem, line):
    assert status_line(states, problem) == line


def test_a_library_refused_by_memory_deny_write_execute_gets_a_hint():
    # given the error Paddle gives under MemoryDenyWriteExecute=yes
    exc = ModelError(
        "engine.detector: Paddle cannot load /m: (PreconditionNotMet) ... libmklml_intel.so: cannot make "
        "segment writable for relocation: Permission denied)"
    )
    # when / then
    assert "install systemd/streamd.service.d/paddle.conf" in start_hint(exc)
    assert start_hint(ModelError("engine.embedder.model_path: /x.onnx: no such file")) == ""

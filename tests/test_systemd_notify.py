"""sd_notify by hand (path and abstract sockets) and the health-gated watchdog, against a socket of our own."""

from __future__ import annotations

import logging
import os
import time

import pytest

from notify_socket import NotifySocket
from streamd.systemd import Notifier, Watchdog, heartbeat_health, notify_address, watchdog_interval


@pytest.fixture
def sock(tmp_path):
    with NotifySocket(tmp_path) as s:
        yield s


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", b"\0/org/freedesktop/systemd1/notify/123"),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_notify_address_from_environment(value, expected):
    # given an environment with (or without) NOTIFY_SOCKET
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    # when / then
    assert notify_address(env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # a child inherited the parent's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval_honours_watchdog_pid(env, expected):
    # given systemd's watchdog variables, read by process 4242
    # when
    interval = watchdog_interval(env, pid=4242)
    # then
    assert interval == expected


def test_ready_with_status_reaches_a_path_socket(sock):
    # given a notifier for the test's socket
    notifier = Notifier.from_env(sock.env)
    # when
    sent = notifier.ready("3 cameras up")
    # then one datagram carries both assignments
    assert sent is True
    assert sock.wait_for(lambda m: "READY" in m, 2.0) == {"READY": "1", "STATUS": "3 cameras up"}


def test_abstract_namespace_socket(tmp_path):
    # given a socket in the abstract namespace, named with '@' like systemd does for containers
    with NotifySocket(abstract=True) as abstract:
        notifier = Notifier.from_env(abstract.env)
        # when
        notifier.watchdog()
        # then
        assert abstract.wait_for(lambda m: "WATCHDOG" in m, 2.0) == {"WATCHDOG": "1"}


def test_reloading_carries_the_monotonic_time(sock):
    # given
    notifier = Notifier.from_env(sock.env)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    # when
    notifier.reloading("reloading the configuration")
    # then MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds at the time of sending
    message = sock.wait_for(lambda m: "RELOADING" in m, 2.0)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert message["STATUS"] == "reloading the configuration"


def test_stopping_and_extend_timeout(sock):
    # given
    notifier = Notifier.from_env(sock.env)
    # when a drain of 12.5 s begins
    notifier.stopping("draining")
    notifier.extend_timeout(12.5)
    # then
    sock.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m, 2.0)
    assert sock.messages == [{"STOPPING": "1", "STATUS": "draining"}, {"EXTEND_TIMEOUT_USEC": "12500000"}]


def test_a_status_cannot_inject_other_assignments(sock):
    # given a status text built from a camera error that holds a newline
    notifier = Notifier.from_env(sock.env)
    # when
    notifier.status("garage down: bad\nREADY=1")
    # then it stays one STATUS line
    assert sock.wait_for(lambda m: "STATUS" in m, 2.0) == {"STATUS": "garage down: bad READY=1"}


def test_without_notify_socket_everything_is_a_quiet_no_op():
    # given no $NOTIFY_SOCKET (a terminal, another supervisor)
    notifier = Notifier.from_env({})
    # when / then
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False


def test_a_vanished_socket_is_not_an_error(tmp_path):
    # given a notifier whose socket went away (systemd restarted)
    sock = NotifySocket(tmp_path)
    notifier = Notifier.from_env(sock.env)
    sock.close()
    # when
    sent = notifier.status("still here")
    # then
    assert sent is False


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_at_half_the_interval_while_the_heartbeat_advances(sock):
    # given a 4 s watchdog and a pipeline that beats every tick
    clock = FakeClock()
    beat = {"t": clock.now}
    health = heartbeat_health(lambda: beat["t"], 2.0, clock)
    dog = Watchdog(Notifier.from_env(sock.env), 4.0, health, clock=clock)
    sent = []
    # when the main loop ticks every 0.5 s for 5 s
    for _ in range(10):
        sent.append(dog.tick())
        clock.now += 0.5
        beat["t"] = clock.now
    # then one ping every 2 s: at 0, 2 and 4 s
    assert [i for i, s in enumerate(sent) if s] == [0, 4, 8]
    assert dog.pings == 3


def test_watchdog_pings_stop_while_the_pipeline_is_stuck_and_resume_after(sock, caplog):
    # given a 4 s watchdog, a heartbeat allowed to be 2 s old, and a heartbeat frozen from t=1 to t=8
    clock = FakeClock()
    start = clock.now
    beat = {"t": clock.now}
    health = heartbeat_health(lambda: beat["t"], 2.0, clock)
    dog = Watchdog(Notifier.from_env(sock.env), 4.0, health, clock=clock)
    pings = []
    caplog.set_level(logging.INFO, logger="streamd.systemd")
    # when the main loop keeps ticking every 0.5 s for 10 s
    for step in range(20):
        t = step * 0.5
        if t <= 1 or t >= 8:
            beat["t"] = start + t
        if dog.tick():
            pings.append(t)
        clock.now += 0.5
    # then no ping while the heartbeat is more than 2 s old (t in 3.5..7.5), pings before and after
    assert pings == [0.0, 2.0, 8.0]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the pipeline made no progress for 2 s; watchdog pings stop, systemd will restart streamd"
    ]
    assert sum("pings resume" in r.getMessage() for r in caplog.records) == 1


def test_watchdog_off_without_watchdog_usec(sock):
    # given systemd did not enable the watchdog
    dog = Watchdog.from_env(Notifier.from_env(sock.env), lambda: None, environ={})
    # when
    pinged = dog.tick()
    # then
    assert pinged is False
    assert not dog.enabled


def test_watchdog_from_env_for_this_process(sock):
    # given WATCHDOG_USEC for this very process
    env = {**sock.env, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    dog = Watchdog.from_env(Notifier.from_env(env), lambda: None, environ=env)
    # when
    dog.tick()
    # then
    assert dog.interval_s == 2.0
    assert dog.tick_interval_s == 0.5
    assert sock.wait_for(lambda m: "WATCHDOG" in m, 2.0) == {"WATCHDOG": "1"}

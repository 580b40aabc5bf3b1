"""Talking to systemd: ``sd_notify`` over ``$NOTIFY_SOCKET`` and the service watchdog.

The protocol is small enough to speak by hand (no libsystemd binding to install): newline-
separated ``KEY=VALUE`` assignments sent as one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract namespace. Without the
variable (run from a terminal, in tests, under another supervisor) every call is a no-op that
answers False, so callers never need to ask whether they run under systemd.

Messages used by streamd (see sd_notify(3)):

- ``READY=1`` once the engine, the index and the outputs are up (``Type=notify``);
- ``STATUS=...`` one line for ``systemctl status`` (cameras up and down);
- ``WATCHDOG=1`` from the main loop while the pipeline is healthy (``WatchdogSec=``);
- ``RELOADING=1`` + ``MONOTONIC_USEC=`` on SIGHUP, then ``READY=1`` when the reload is done;
- ``STOPPING=1`` when a drain starts, with ``EXTEND_TIMEOUT_USEC=`` so a long drain is not
  killed half-way.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify_address(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """The socket address in ``$NOTIFY_SOCKET`` ready for ``sendto``, or None when unset or unusable.

    ``/run/systemd/notify`` is a path; ``@name`` is the abstract-namespace name ``\\0name``.
    Other forms (``vsock:`` from systemd 253 in VMs) are not supported and are ignored with a
    debug message rather than failing the daemon.
    """
    env = os.environ if environ is None else environ
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.debug("NOTIFY_SOCKET %r is not an AF_UNIX path; systemd notifications are off", value)
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds of ``$WATCHDOG_USEC`` when systemd's watchdog is on for this process, else None.

    Like ``sd_watchdog_enabled``: a ``$WATCHDOG_PID`` naming another process (a child that
    inherited the environment) means the watchdog is not ours. Malformed values count as off.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new assignment (a STATUS could then forge READY=1 or MAINPID=).
    return " ".join(str(text).split())


class Notifier:
    """Sends sd_notify messages to one socket; a Notifier without an address does nothing.

    Thread-safe: each message is one ``sendto`` on a datagram socket. Send failures (systemd
    restarted, socket gone) are logged at debug level and answered False, never raised: losing
    a status line must not take the daemon down.
    """

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A Notifier for ``$NOTIFY_SOCKET`` (a no-op one when it is unset)."""
        return cls(notify_address(environ))

    @property
    def enabled(self) -> bool:
        """True when messages go somewhere."""
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when it was sent."""
        if self._sock is None or not fields:
            return False
        payload = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._sock.sendto(payload.encode("utf-8"), self.address)  # type: ignore[arg-type]
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup (or a reload) is complete."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive and healthy."""
        return self.notify(WATCHDOG=1)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd 253's notify-reload needs the time stamp)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec, **({"STATUS": status} if status else {}))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a clean stop has begun."""
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: the current start/stop/reload may take ``seconds`` more from now."""
        return self.notify(EXTEND_TIMEOUT_USEC=max(1, int(seconds * 1_000_000)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


#: Answers the monotonic time (``time.monotonic()``) of the pipeline's last sign of progress.
Heartbeat = Callable[[], float]
#: Answers None while the daemon is healthy, else one line saying what is wrong.
Health = Callable[[], "str | None"]


def heartbeat_health(
    heartbeat: Heartbeat, max_silence_s: float, clock: Callable[[], float] = time.monotonic
) -> Health:
    """A health check that fails once ``heartbeat()`` is more than ``max_silence_s`` old."""

    def check() -> str | None:
        silence = clock() - heartbeat()
        if silence > max_silence_s:
            return f"the pipeline made no progress for {silence:.0f} s"
        return None

    return check


class Watchdog:
    """Pings systemd's watchdog from the main loop, but only while the daemon is healthy.

    Call :meth:`tick` from the main loop at least every ``interval_s / 2`` seconds. It sends
    ``WATCHDOG=1`` at half the interval systemd gave (the margin sd_watchdog_enabled(3)
    recommends) as long as ``health()`` answers None. A wedged main loop never calls tick; a
    wedged pipeline fails its health check: either way the pings stop and systemd restarts the
    service ``WatchdogSec=`` after the last one. A watchdog with no interval (systemd's
    watchdog off) never pings.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float | None,
        health: Health,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.health = health
        self._clock = clock
        self._last_ping: float | None = None
        self._problem: str | None = None
        self.pings = 0

    @classmethod
    def from_env(
        cls,
        notifier: Notifier,
        health: Health,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> Watchdog:
        """A watchdog with systemd's interval from ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``."""
        return cls(notifier, watchdog_interval(environ), health, clock=clock)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None and self.notifier.enabled

    @property
    def tick_interval_s(self) -> float:
        """How often the main loop should call :meth:`tick`: a quarter of the interval, at most 1 s."""
        return min(1.0, self.interval_s / 4) if self.interval_s else 1.0

    def tick(self) -> bool:
        """Ping when due and healthy; True when a ping was sent."""
        if not self.enabled:
            return False
        problem = self.health()
        if (problem is None) != (self._problem is None):
            # Said once per change, not every tick: the journal shows why systemd is about to restart us.
            if problem is None:
                log.warning("healthy again; watchdog pings resume")
            else:
                log.error("%s; watchdog pings stop, systemd will restart streamd", problem)
        self._problem = problem
        if problem is not None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.interval_s / 2:  # type: ignore[operator]
            return False
        if self.notifier.watchdog():
            self._last_ping = now
            self.pings += 1
            return True
        return False

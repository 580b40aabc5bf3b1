"""The daemon's main loop: signals, systemd notifications, the watchdog, reloads and the drain.

``streamd run`` builds the settings and logging, then hands over::

    service = Service.from_env(stop_timeout_s=settings.pipeline.stop_timeout_s)
    code = service.run(lambda: App.from_settings(settings),
                       make_reloader=lambda app: ConfigReloader(path, settings, app, ...))
    sys.exit(code)

:meth:`Service.run` builds and starts the app (``STATUS=`` while it loads), says ``READY=1``,
then loops in the main thread until SIGTERM or SIGINT:

- every tick it pings the watchdog while the app is healthy (its recognition workers run and,
  when the app has one, its pipeline heartbeat is fresh) and refreshes ``STATUS=`` with the
  cameras up and down;
- SIGHUP reloads the configuration (``RELOADING=1`` ... ``READY=1``);
- SIGTERM/SIGINT drain: ``STOPPING=1``, ``EXTEND_TIMEOUT_USEC`` for the drain, ``app.stop()``.
  A second SIGINT during the drain (Ctrl-C twice) ends the process at once.

Signal handlers only enqueue the signal (``queue.SimpleQueue.put`` is safe in a handler);
the main loop does the work. A signal during start stops the start and exits cleanly.

Test hook: with ``$STREAMD_TEST_WEDGE_FILE`` set, the main loop blocks while that file exists,
as a hung main loop would, so that tests can watch the watchdog pings stop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from streamd.exitcodes import EXIT_FAILURE, EXIT_OK, exit_code_for
from streamd.sources.state import CameraState
from streamd.systemd import Health, Notifier, Watchdog, heartbeat_health

log = logging.getLogger(__name__)

#: Environment variable naming the test hook's wedge file (see the module docstring).
WEDGE_FILE_ENV = "STREAMD_TEST_WEDGE_FILE"
#: Names shown in STATUS before "+N more" (systemctl status shows one line).
_STATUS_NAMES = 4


class ServiceApp(Protocol):
    """What the main loop needs of the daemon (``streamd.app.App`` provides it)."""

    def start(self) -> Any: ...

    def stop(self, timeout: float | None = None) -> bool: ...

    def camera_states(self) -> Sequence[CameraState]: ...

    @property
    def healthy(self) -> bool: ...


class Reloader(Protocol):
    def reload(self) -> Any: ...


class _StopDuringStart(BaseException):
    """Raised by the start-phase signal handler to abandon a start (like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def status_line(states: Sequence[CameraState], problem: str | None = None) -> str:
    """One ``STATUS=`` line: cameras streaming out of those enabled, and which are down and why.

    ``2/3 cameras streaming; down: garage (backoff)``. Cameras that are ``stopped`` (disabled)
    are left out; files that ``ended`` are listed as such. ``problem`` (a failed health check)
    comes first, so ``systemctl status`` shows it.
    """
    active = [s for s in states if s.status != "stopped"]
    up = [s for s in active if s.up]
    down = [s for s in active if not s.up and s.status != "ended"]
    ended = [s for s in active if s.status == "ended"]
    parts = []
    if problem:
        parts.append(f"UNHEALTHY: {problem}")
    parts.append(f"{len(up)}/{len(active)} cameras streaming" if active else "no cameras enabled")

    def names(items: Sequence[CameraState], detail: bool) -> str:
        shown = [f"{s.camera} ({s.status})" if detail else s.camera for s in items[:_STATUS_NAMES]]
        more = len(items) - len(shown)
        return ", ".join(shown) + (f" +{more} more" if more > 0 else "")

    if down:
        parts.append(f"down: {names(down, True)}")
    if ended:
        parts.append(f"ended: {names(ended, False)}")
    return "; ".join(parts)


#: Messages of the dynamic loader when MemoryDenyWriteExecute= refuses a library (Paddle's libmklml).
_WX_REFUSED = ("cannot make segment writable for relocation", "cannot enable executable stack")


def start_hint(exc: BaseException) -> str:
    """A hint appended to a start failure whose cause the unit's sandbox explains, else ''."""
    text = str(exc)
    if any(marker in text for marker in _WX_REFUSED):
        return (
            " (the unit's MemoryDenyWriteExecute=yes refused a library that needs writable code, as "
            "Paddle's does: install systemd/streamd.service.d/paddle.conf, see docs/operations.md)"
        )
    return ""


def app_health(app: ServiceApp, max_silence_s: float) -> Health:
    """The watchdog's health check: the app is healthy and, if it has a heartbeat, it is fresh."""
    beat = getattr(app, "heartbeat", None)
    fresh = heartbeat_health(beat, max_silence_s) if callable(beat) else None

    def check() -> str | None:
        if not app.healthy:
            return "a recognition worker stopped"
        return fresh() if fresh is not None else None

    return check


class Service:
    """Runs one app under a service manager (see the module docstring). Call :meth:`run` in the main thread."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        watchdog_interval_s: float | None = None,
        stop_timeout_s: float = 10.0,
        max_silence_s: float | None = None,
        wedge_file: Path | None = None,
        install_signals: bool = True,
    ) -> None:
        self.notifier = notifier
        self.watchdog_interval_s = watchdog_interval_s
        self.stop_timeout_s = stop_timeout_s
        # A heartbeat older than half the watchdog interval is a stuck pipeline: the pings then
        # stop early enough for systemd to act within 1.5 x WatchdogSec of the last progress.
        self.max_silence_s = max_silence_s if max_silence_s is not None else (watchdog_interval_s or 30.0) / 2
        self.wedge_file = wedge_file
        self.install_signals = install_signals
        self.watchdog: Watchdog | None = None
        self.app: ServiceApp | None = None
        self.reloader: Reloader | None = None
        self.reloads = 0
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._status = ""
        self._previous_handlers: dict[int, Any] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Service:
        """A Service for ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and the test hook's ``$STREAMD_TEST_WEDGE_FILE``."""
        from streamd.systemd import watchdog_interval

        env = os.environ if environ is None else environ
        wedge = env.get(WEDGE_FILE_ENV)
        return cls(
            Notifier.from_env(env),
            watchdog_interval_s=watchdog_interval(env),
            wedge_file=Path(wedge) if wedge else None,
            **kwargs,
        )

    # ------------------------------------------------------------------ requests (any thread)

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the main loop to drain and exit, as SIGTERM does."""
        self._signals.put(signum)

    def request_reload(self) -> None:
        """Ask the main loop to reload the configuration, as SIGHUP does."""
        self._signals.put(signal.SIGHUP)

    # ------------------------------------------------------------------ the run

    def run(
        self,
        build: Callable[[], ServiceApp],
        make_reloader: Callable[[ServiceApp], Reloader] | None = None,
    ) -> int:
        """Build and start the app, serve until a stop signal, drain; answers the exit code."""
        self._handle_signals(start_phase=True)
        try:
            self.notifier.status("starting: loading the engine and the index")
            try:
                self.app = build()
                self.reloader = make_reloader(self.app) if make_reloader is not None else None
                self.app.start()
            except _StopDuringStart as stop:
                log.info("%s during start: stopped before serving", signal.Signals(stop.signum).name)
                if self.app is not None:
                    self.app.stop(self.stop_timeout_s)
                return EXIT_OK
            except Exception as exc:  # noqa: BLE001 - one line to the journal and an exit code
                code = exit_code_for(exc)
                log.error("streamd failed to start: %s%s", exc, start_hint(exc), exc_info=code not in (2, 3))
                self.notifier.status(f"failed to start: {exc}")
                return code
            self._handle_signals(start_phase=False)
            self.watchdog = Watchdog(
                self.notifier, self.watchdog_interval_s, app_health(self.app, self.max_silence_s)
            )
            self._status = self._status_text()
            self.notifier.ready(self._status)
            log.info("streamd ready: %s", self._status)
            signum = self._loop()
            return self._drain(signum)
        finally:
            self._restore_signals()

    def _loop(self) -> int:
        """Serve until a stop signal; answers it."""
        assert self.watchdog is not None
        tick = self.watchdog.tick_interval_s
        while True:
            self._maybe_wedge()
            self.watchdog.tick()
            self._refresh_status()
            try:
                signum = self._signals.get(timeout=tick)
            except queue.Empty:
                continue
            if signum == signal.SIGHUP:
                self._reload()
            else:
                return signum

    def _drain(self, signum: int) -> int:
        assert self.app is not None
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        log.info("%s: stopping, draining for up to %g s", name, self.stop_timeout_s)
        self.notifier.stopping(f"stopping ({name}): draining for up to {self.stop_timeout_s:g} s")
        # The drain may take the whole stop timeout; ask systemd for it plus a margin to exit.
        self.notifier.extend_timeout(self.stop_timeout_s + 5.0)
        if self.install_signals and threading.current_thread() is threading.main_thread():
            # Ctrl-C again ends the process at once (nobody wants to wait on a second Ctrl-C).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            drained = self.app.stop(self.stop_timeout_s)
        except Exception:  # noqa: BLE001
            log.exception("the drain failed")
            return EXIT_FAILURE
        if not drained:
            log.warning("drain not finished within %g s: parts still running were abandoned", self.stop_timeout_s)
            return EXIT_FAILURE
        log.info("stopped cleanly")
        return EXIT_OK

    # ------------------------------------------------------------------ loop work

    def _reload(self) -> None:
        if self.reloader is None:
            log.warning("SIGHUP: nothing to reload (no configuration file)")
            return
        self.notifier.reloading("reloading the configuration")
        # Restarting changed cameras may take a while; keep systemd from timing the reload out.
        self.notifier.extend_timeout(self.stop_timeout_s + 30.0)
        try:
            self.reloader.reload()
        except Exception:  # noqa: BLE001 - a failed reload must not end the daemon
            log.exception("reload failed; the daemon goes on with what is running")
        self.reloads += 1
        self._status = self._status_text()
        self.notifier.ready(self._status)

    def _status_text(self) -> str:
        assert self.app is not None
        problem = self.watchdog.health() if self.watchdog is not None else None
        return status_line(self.app.camera_states(), problem)

    def _refresh_status(self) -> None:
        text = self._status_text()
        if text != self._status:
            self._status = text
            self.notifier.status(text)

    def _maybe_wedge(self) -> None:
        if self.wedge_file is None or not self.wedge_file.exists():
            return
        log.warning("test hook: main loop wedged while %s exists", self.wedge_file)
        while self.wedge_file.exists():
            time.sleep(0.05)
        log.warning("test hook: main loop released")

    # ------------------------------------------------------------------ signals

    def _handle_signals(self, *, start_phase: bool) -> None:
        if not self.install_signals or threading.current_thread() is not threading.main_thread():
            return

        def stop_start(signum: int, frame: object) -> None:
            raise _StopDuringStart(signum)

        def enqueue(signum: int, frame: object) -> None:
            self._signals.put(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            handler = stop_start if start_phase and signum != signal.SIGHUP else enqueue
            previous = signal.signal(signum, handler)
            self._previous_handlers.setdefault(signum, previous)

    def _restore_signals(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers.clear()

"""A debounced file watch in its own thread: "call me once things have been quiet for a while".

Used by the index reloader (watching an index directory and its parent) and the gallery watcher
(watching a gallery data_root). Events come from watchfiles (inotify on Linux; polling with
``force_polling`` for network file systems). The callback runs in this thread once no relevant
event has arrived for ``debounce_s``, so a writer that touches several files one after the
other is handled once, after the last one. The callback may ask to be called again after a delay
(a retry), and it is also called every ``recheck_s`` without any event, in case the OS dropped
one (inotify queue overflow, a network mount).

The set of watched paths can change while the thread runs: ``paths()`` is asked again whenever
``identity()`` changes (the reloader watches the index directory itself, whose inode changes
with every atomic save) or a watched path disappears.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)
# watchfiles logs every batch of changes at INFO ("3 changes detected"): noise in a daemon's log.
if logging.getLogger("watchfiles.main").level == logging.NOTSET:
    logging.getLogger("watchfiles.main").setLevel(logging.WARNING)

#: How often the watch loop wakes up without events to check deadlines and the stop flag.
TICK_S = 0.05

#: Returns None when done, or seconds after which to be called again even without an event.
SettledCallback = Callable[[], float | None]
PathFilter = Callable[[str], bool]


class DebouncedWatch:
    """Runs ``on_settled`` in a thread after changes under ``paths()`` have settled.

    ``paths`` gives the paths to watch now (missing ones are skipped; with none left the thread
    polls every tick). ``relevant(path)`` filters event paths (default: all). ``identity`` is
    compared on every tick; a new value restarts the watch with fresh ``paths()``.
    """

    def __init__(
        self,
        name: str,
        paths: Callable[[], Sequence[Path]],
        on_settled: SettledCallback,
        *,
        debounce_s: float,
        recheck_s: float | None = None,
        recursive: bool = True,
        relevant: PathFilter | None = None,
        identity: Callable[[], Hashable] | None = None,
        force_polling: bool | None = None,
        first_call_s: float | None = 0.0,
        nice: int = 0,
    ) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0, got {debounce_s}")
        self.name = name
        self._paths = paths
        self._on_settled = on_settled
        self._debounce_s = float(debounce_s)
        self._recheck_s = recheck_s
        self._recursive = recursive
        self._relevant = relevant
        self._identity = identity or (lambda: None)
        self._force_polling = force_polling
        self._first_call_s = first_call_s
        self._nice = nice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._due: float | None = None  # monotonic time of the next on_settled call
        self._last_call = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        if self._first_call_s is not None:
            self._due = time.monotonic() + self._first_call_s
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait for it; False when it did not end within ``timeout``.

        A callback already running (a load, an embedding) finishes first.
        """
        self._stop.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        if self._nice:
            lower_thread_priority(self._nice)
        while not self._stop.is_set():
            paths = [p for p in self._paths() if p.exists()]
            if not paths:
                self._idle_tick()
                continue
            try:
                self._watch(paths)
            except Exception as exc:  # a path vanished under the watcher, inotify limits, ...
                log.debug("%s: watching %s failed (%s); watching again", self.name, paths, exc)
                self._idle_tick()

    def _watch(self, paths: list[Path]) -> None:
        import watchfiles

        identity = self._identity()
        established = False
        for changes in watchfiles.watch(
            *paths,
            watch_filter=None,
            debounce=int(TICK_S * 1000),
            step=10,
            stop_event=self._stop,
            rust_timeout=int(TICK_S * 1000),
            yield_on_timeout=True,
            raise_interrupt=False,
            recursive=self._recursive,
            force_polling=self._force_polling,
            ignore_permission_denied=True,
        ):
            if not established:
                # The OS watch exists from here on; whatever changed before it did is found by one
                # look (the callback compares with what it handled last), after a quiet period
                # like any change: a writer may be between two files right now.
                established = True
                if self._due is None:
                    self._due = time.monotonic() + self._debounce_s
            if any(self._relevant is None or self._relevant(path) for _, path in changes):
                # Quiet period: every relevant event pushes the call further out.
                self._due = time.monotonic() + self._debounce_s
            self._maybe_call()
            if self._stop.is_set():
                return
            if self._identity() != identity or not all(p.exists() for p in paths):
                # e.g. the index directory was swapped: watch the new one. Anything written
                # in between is caught by the call this schedules.
                self._due = min(self._due or float("inf"), time.monotonic() + self._debounce_s)
                return

    def _idle_tick(self) -> None:
        self._stop.wait(TICK_S)
        self._maybe_call()

    def _maybe_call(self) -> None:
        now = time.monotonic()
        recheck = self._recheck_s is not None and now - self._last_call >= self._recheck_s
        if not recheck and (self._due is None or now < self._due) or self._stop.is_set():
            return
        self._due = None
        self._last_call = now
        try:
            retry_in = self._on_settled()
        except Exception:  # the thread must survive a bug in one pass; the next event retries
            log.exception("%s: check failed", self.name)
            retry_in = None
        if retry_in is not None:
            self._due = time.monotonic() + max(0.0, retry_in)


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value (Linux: per thread), so its CPU work yields to the frame path."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError) as exc:
        log.debug("cannot lower the priority of this thread: %s", exc)

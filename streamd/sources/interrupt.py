"""Interrupting a PyAV read that is blocked in FFmpeg, from another thread.

FFmpeg checks an *interrupt callback* every ~100 ms while it waits on a socket. PyAV installs one
when a container is opened with ``timeout=``; it answers "abort" once ``time.monotonic()``,
looked up through the module ``av.container.core``, passes the read's start time plus the
timeout. PyAV has no public way to abort a read early, so :func:`install` gives that module a
clock whose ``monotonic()`` answers +inf in the threads that were asked to stop (and the real
time in every other thread). The blocked call then returns with an FFmpeg "exit" error within
~0.1 s, the container can be closed normally, and no other camera is affected.

If a PyAV release stops calling ``av.container.core.time.monotonic`` the hook does nothing and
stop falls back to waiting for the read timeout (the camera's ``stall_timeout_s``); the
source tests would show it.
"""

from __future__ import annotations

import threading
import time as _time
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_interrupted: set[int] = set()
_installed = False


class _InterruptibleClock:
    """Stands in for the ``time`` module inside ``av.container.core``."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def monotonic(self) -> float:
        if _interrupted and threading.get_ident() in _interrupted:
            return float("inf")
        return self._real.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install() -> bool:
    """Hook PyAV's timeout clock once per process; False when this PyAV has no such clock."""
    global _installed
    with _lock:
        if _installed:
            return True
        import av.container.core as core

        real = getattr(core, "time", None)
        if real is None or not hasattr(real, "monotonic"):
            return False
        if not isinstance(real, _InterruptibleClock):
            core.time = _InterruptibleClock(real if isinstance(real, ModuleType) else _time)  # type: ignore[attr-defined]
        _installed = True
        return True


def interrupt(thread_id: int) -> None:
    """Make FFmpeg calls with a timeout in thread ``thread_id`` abort, until :func:`clear`."""
    _interrupted.add(thread_id)


def clear(thread_id: int) -> None:
    """Let thread ``thread_id`` read again (it is done with the interrupted container)."""
    _interrupted.discard(thread_id)

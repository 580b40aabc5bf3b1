"""A camera's connection state, as an immutable snapshot for metrics, health checks and events."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

#: idle: created, not started. connecting: opening the stream. streaming: frames arrive.
#: backoff: down, waiting until ``next_retry_at``. ended: a file without loop reached its end.
#: stopped: stop() was called (or the camera is disabled).
Status = Literal["idle", "connecting", "streaming", "backoff", "ended", "stopped"]

#: full: every frame is decoded. keyframes: only keyframes are decoded (PyAV skip_frame=NONKEY).
DecodeMode = Literal["full", "keyframes"]


@dataclass(frozen=True)
class CameraState:
    """What one camera is doing right now. Times are wall-clock ``time.time()`` seconds.

    ``attempts`` counts consecutive failed connections (0 once frames flow); ``last_error`` is
    the latest failure, one line with any password masked, kept after recovery for diagnosis.
    """

    camera: str
    status: Status = "idle"
    since: float = 0.0
    mode: DecodeMode | None = None
    source: str = ""
    attempts: int = 0
    next_retry_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_frame_at: float | None = None
    reconnects: int = 0
    width: int | None = None
    height: int | None = None
    keyframe_interval_s: float | None = None

    @property
    def up(self) -> bool:
        return self.status == "streaming"

    def to_dict(self) -> dict:
        """A JSON-ready dict (for /api and events)."""
        return {
            "camera": self.camera,
            "status": self.status,
            "since": self.since,
            "mode": self.mode,
            "source": self.source,
            "attempts": self.attempts,
            "next_retry_at": self.next_retry_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_frame_at": self.last_frame_at,
            "reconnects": self.reconnects,
            "width": self.width,
            "height": self.height,
            "keyframe_interval_s": self.keyframe_interval_s,
        }


StateCallback = Callable[[CameraState], None]


class StateCell:
    """Holds the current :class:`CameraState`; readers from any thread get a consistent snapshot.

    ``update(**changes)`` swaps in a new snapshot under a lock and says whether the status or
    the decode mode changed (the owner then tells its listeners, outside the lock).
    """

    def __init__(self, initial: CameraState) -> None:
        self._lock = threading.Lock()
        self._state = initial

    def get(self) -> CameraState:
        with self._lock:
            return self._state

    def update(self, **changes: object) -> tuple[CameraState, bool]:
        """Apply ``changes``; answers the new state and whether status or mode changed."""
        with self._lock:
            old = self._state
            new = replace(old, **changes)  # type: ignore[arg-type]
            self._state = new
        changed = (old.status, old.mode) != (new.status, new.mode)
        return new, changed

"""The last N identity events, kept in memory for ``GET /api/events/recent``.

The pipeline thread calls ``add``; HTTP handlers call ``query``. A deque with ``maxlen`` bounds
memory whatever the event rate; a lock keeps a query from seeing the deque change under it.
"""

from __future__ import annotations

import threading
from collections import deque

from streamd.types import IdentityEvent


class RecentEvents:
    """A bounded ring buffer of IdentityEvent, newest last; the oldest fall out first."""

    def __init__(self, maxlen: int = 500) -> None:
        if maxlen < 1:
            raise ValueError(f"RecentEvents maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._events: deque[IdentityEvent] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, event: IdentityEvent) -> None:
        """Keep ``event`` (called for every event the pipeline emits; O(1), never blocks long)."""
        with self._lock:
            self._events.append(event)

    def __len__(self) -> int:
        return len(self._events)

    def query(
        self,
        *,
        camera: str | None = None,
        label: str | None = None,
        type: str | None = None,
        limit: int = 100,
    ) -> list[IdentityEvent]:
        """Up to ``limit`` events matching every given filter, newest first."""
        with self._lock:
            snapshot = list(self._events)
        out: list[IdentityEvent] = []
        for event in reversed(snapshot):
            if camera is not None and event.camera != camera:
                continue
            if label is not None and event.label != label:
                continue
            if type is not None and event.type != type:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

"""Handing the frames of many cameras to a pool of workers, one frame per camera at a time.

Each camera has its own bounded :class:`~streamd.sources.queues.FrameQueue` (filled by its
decoder thread, never blocking it). A worker *claims* up to N frames of N different cameras
(never more than its share of the frames ready, so the other workers get theirs), processes
them and *releases* the cameras. A camera is claimed by one worker at a time, so its
tracker sees its frames in order, and cameras are visited round-robin, so a busy camera cannot
starve the others: under overload every camera loses frames in its own queue (counted there),
none loses them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamd.sources.queues import END, FrameQueue, _EndOfStream
from streamd.types import Frame


@dataclass(frozen=True)
class Claim:
    """A camera claimed by a worker: its next frame, or :data:`END` when its stream ended."""

    camera: str
    item: Frame | _EndOfStream

    @property
    def ended(self) -> bool:
        return self.item is END


class FrameScheduler:
    """Round-robin claims over per-camera frame queues that share one ``wakeup`` event."""

    def __init__(self, wakeup: threading.Event | None = None, *, workers: int = 1) -> None:
        self.wakeup = wakeup if wakeup is not None else threading.Event()
        #: How many workers claim; a claim takes at most its share of the cameras with a frame ready.
        self.workers = max(1, workers)
        self._lock = threading.Lock()
        self._queues: dict[str, FrameQueue] = {}
        self._order: list[str] = []
        self._busy: set[str] = set()
        self._batches = 0  # claims handed out and not yet released
        self._next = 0
        self._changed = threading.Condition(self._lock)

    def add(self, camera: str, queue: FrameQueue) -> None:
        """Serve ``camera`` from ``queue`` (made with this scheduler's ``wakeup``)."""
        with self._lock:
            if camera in self._queues:
                raise ValueError(f"camera {camera!r} is already scheduled")
            self._queues[camera] = queue
            self._order.append(camera)
        self.wakeup.set()

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def claim(self, max_frames: int, timeout: float, stop: threading.Event | None = None) -> list[Claim]:
        """Up to ``max_frames`` claims of different idle cameras; [] after ``timeout`` s or on ``stop``.

        Returns as soon as one frame is ready, with whatever else is ready at that moment.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.wakeup.clear()  # before polling: a put that lands after the poll sets it again
            claims = self._poll(max_frames)
            if claims:
                return claims
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return []
            self.wakeup.wait(min(left, 0.25))

    def release(self, claims: list[Claim]) -> None:
        """Give the claimed cameras back; a camera whose stream ended is forgotten."""
        with self._lock:
            if claims:
                self._batches = max(0, self._batches - 1)
            for claim in claims:
                self._busy.discard(claim.camera)
                if claim.ended:
                    self._forget(claim.camera)
            self._changed.notify_all()
        self.wakeup.set()  # frames that arrived while their camera was busy can now be claimed

    def wait_drained(self, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
        """Wait until every camera's queue has ended and been released; False on timeout.

        ``alive`` answers whether anyone is still processing (else waiting is pointless).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queues:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self._changed.wait(min(left, 0.1))
            return True

    def wait_gone(self, camera: str, timeout: float) -> bool:
        """Wait until ``camera``'s end marker was processed and released; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while camera in self._queues:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
            return True

    def discard(self, camera: str) -> None:
        """Stop serving ``camera`` now, whatever is left in its queue."""
        with self._lock:
            self._forget(camera)
            self._busy.discard(camera)

    def pending(self) -> int:
        """Frames waiting in every queue (for tests and the benchmark)."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def _poll(self, max_frames: int) -> list[Claim]:
        with self._lock:
            n = len(self._order)
            # A fair share of what is ready, so that one worker's batch never leaves the others idle
            # (4 cameras, 2 workers: 2 frames each, processed in parallel, not 4 in a row).
            ready = sum(1 for c in self._order if c not in self._busy and (len(self._queues[c]) or self._queues[c].closed))
            idle = max(1, self.workers - self._batches)
            max_frames = min(max_frames, max(1, -(-ready // idle)))
            claims: list[Claim] = []
            for k in range(n):
                camera = self._order[(self._next + k) % n]
                if camera in self._busy:
                    continue
                item = self._queues[camera].get_nowait()
                if item is None:
                    continue
                self._busy.add(camera)
                claims.append(Claim(camera, item))
                if len(claims) >= max_frames:
                    self._next = (self._next + k + 1) % n
                    break
            else:
                if n:
                    self._next = (self._next + 1) % n
            if claims:
                self._batches += 1
            return claims

    def _forget(self, camera: str) -> None:
        self._queues.pop(camera, None)
        if camera in self._order:
            self._order.remove(camera)
        self._next = 0

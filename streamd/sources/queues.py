"""The bounded hand-off between a camera's decoder thread and recognition.

A camera thread must never wait for recognition: a slow engine would make the decoder fall
behind live, and RTSP servers cut clients that stop reading. So ``put`` never blocks. When the
queue is full, the policy decides which frame is lost, and every loss is counted in
``streamd_frames_dropped_total{camera, reason}``:

- ``drop_oldest`` (default): the oldest queued frame goes, so recognition always sees the
  freshest view (reason ``queue_full``).
- ``drop_newest``: the new frame goes and what was queued stays (reason ``queue_full``).

A frame put after :meth:`FrameQueue.close` is dropped with reason ``closed``. ``close()`` is the
end marker: once the queue is drained, ``get`` answers :data:`END`, which the camera's
supervisor guarantees by closing its queue in a ``finally``.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Final, Literal

from streamd.metrics import Metrics
from streamd.types import Frame

DropPolicy = Literal["drop_oldest", "drop_newest"]
DROP_POLICIES: tuple[str, ...] = ("drop_oldest", "drop_newest")


class _EndOfStream:
    """The end marker type; its only instance is :data:`END` (compare with ``is``)."""

    def __repr__(self) -> str:
        return "END"

    def __bool__(self) -> bool:
        return False


#: Returned by :meth:`FrameQueue.get` once the queue is closed and empty.
END: Final = _EndOfStream()


class FrameQueue:
    """A bounded, thread-safe frame queue whose ``put`` never blocks.

    Usually one per camera (its size and policy are camera settings). Several producers may
    share one; then their owner closes it. ``wakeup`` is an optional event set on every put and
    on close, so that one consumer can wait on many queues (``wakeup.wait(); wakeup.clear()``
    then poll each with :meth:`get_nowait`).
    """

    def __init__(
        self,
        maxsize: int = 2,
        policy: DropPolicy = "drop_oldest",
        metrics: Metrics | None = None,
        *,
        wakeup: threading.Event | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        if policy not in DROP_POLICIES:
            raise ValueError(f"drop policy must be one of {', '.join(DROP_POLICIES)}, got {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self._metrics = metrics if metrics is not None else Metrics()
        self._wakeup = wakeup
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        #: Frames dropped so far by (camera, reason); the metric holds the same counts.
        self.dropped: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ producer side

    def put(self, frame: Frame) -> bool:
        """Queue ``frame`` without blocking; False when it was the frame that got dropped."""
        with self._cond:
            if self._closed:
                lost, kept = frame, False
                reason = "closed"
            elif len(self._items) < self.maxsize:
                self._items.append(frame)
                self._cond.notify()
                lost, kept, reason = None, True, ""
            elif self.policy == "drop_oldest":
                lost = self._items.popleft()
                self._items.append(frame)
                self._cond.notify()
                kept, reason = True, "queue_full"
            else:
                lost, kept, reason = frame, False, "queue_full"
            if lost is not None:
                self.dropped[(lost.camera, reason)] += 1
        if lost is not None:
            self._metrics.frames_dropped.labels(lost.camera, reason).inc()
        if kept and self._wakeup is not None:
            self._wakeup.set()
        return kept

    def put_wait(self, frame: Frame, stop: threading.Event, poll_s: float = 0.1) -> bool:
        """Queue ``frame``, waiting for room until ``stop`` is set (then it is dropped as ``closed``).

        Only for sources that are not live (a video file read as fast as it decodes): there
        nobody falls behind live by waiting, and dropping would lose frames for no reason.
        """
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed and not stop.is_set():
                self._cond.wait(poll_s)
            if len(self._items) < self.maxsize and not self._closed:
                self._items.append(frame)
                self._cond.notify_all()
                queued = True
            else:
                queued = False
        if not queued:
            return self.put(frame) if not self._closed and not stop.is_set() else self._drop_closed(frame)
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    def _drop_closed(self, frame: Frame) -> bool:
        with self._cond:
            self.dropped[(frame.camera, "closed")] += 1
        self._metrics.frames_dropped.labels(frame.camera, "closed").inc()
        return False

    def close(self) -> None:
        """Mark the end of the stream: consumers get :data:`END` after the frames still queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ consumer side

    def get(self, timeout: float | None = None) -> Frame | _EndOfStream | None:
        """The oldest queued frame; :data:`END` when closed and drained; None after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return END
            item = self._items.popleft()
            self._cond.notify_all()  # a put_wait() may be waiting for room
            return item

    def get_nowait(self) -> Frame | _EndOfStream | None:
        """Like :meth:`get` without waiting: None when nothing is queued yet."""
        return self.get(timeout=0)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

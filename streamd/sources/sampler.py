"""Choosing which decoded frames go on to recognition: by timestamp, not by frame count.

Counting frames ("every 5th frame") drifts as soon as a camera changes its rate, drops frames
or sends variable-rate video; timestamps do not. The sampler keeps a schedule of due times
``t0, t0 + 1/fps, t0 + 2/fps, ...`` in stream time and takes the first frame at or after each due
time, so the average rate is exactly ``fps`` whatever the source does.
"""

from __future__ import annotations


class Sampler:
    """Picks frames at ``fps`` per second of stream time (pts, in seconds).

    ``offer(pts)`` is called for every decoded frame and answers whether to keep it; :attr:`skipped` then tells how many frames went by since the previous kept one
    (the tracker's period). A pts that jumps back (a looping file, a camera that restarted its
    clock) or far ahead (a gap in the stream) restarts the schedule at that frame.
    """

    # A frame this early (as a fraction of the period) still counts as on time: timestamps of
    # network streams jitter, and a 5 fps camera sampled at 5 fps must not lose every other frame.
    EARLY_TOLERANCE = 0.1
    # A jump ahead of this many periods is a gap: resume now instead of catching up in a burst.
    GAP_PERIODS = 4.0

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"sample fps must be > 0, got {fps}")
        self.period = 1.0 / fps
        self._due: float | None = None
        self._last_pts: float | None = None
        self._since_last = 0
        self.skipped = 0

    def skip(self, frames: int = 1) -> None:
        """Frames of the source that went by unoffered (damaged ones): they count in :attr:`skipped`."""
        self._since_last += frames

    @property
    def wanted_from(self) -> float | None:
        """The earliest pts :meth:`offer` would keep next; None before the schedule started."""
        if self._due is None:
            return None
        return self._due - self.EARLY_TOLERANCE * self.period

    def reset(self) -> None:
        """Forget the schedule (a new connection): the next frame is taken."""
        self._due = None
        self._last_pts = None
        self._since_last = 0

    def offer(self, pts: float, unseen: int = 0) -> bool:
        """True when the frame at ``pts`` seconds should be kept; sets :attr:`skipped` when it is.

        ``unseen`` is how many frames of the source just before this one were never decoded
        (keyframe-only decoding); they count as skipped.
        """
        self._since_last += unseen
        last, self._last_pts = self._last_pts, pts
        restart = (
            self._due is None
            or (last is not None and pts < last)
            or pts - self._due > self.GAP_PERIODS * self.period
        )
        if restart:
            self._due = pts
        assert self._due is not None
        if pts + self.EARLY_TOLERANCE * self.period < self._due:
            self._since_last += 1
            return False
        # Advance from the due time, not from pts, so that jitter does not accumulate into drift.
        self._due += self.period
        if self._due <= pts:
            self._due = pts + self.period
        self.skipped, self._since_last = self._since_last, 0
        return True

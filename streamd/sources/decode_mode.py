"""Choosing between decoding every frame and decoding keyframes only.

Decoding is most of a camera's CPU cost, and most of it is wasted when only a few frames per
second are sampled. When the sample rate is at or below the stream's keyframe rate, decoding
keyframes only (``skip_frame = "NONKEY"``) loses nothing the sampler would have kept and cuts
decode work by about the GOP length. The keyframe interval is not announced by RTSP, so it is
measured on the fly from the packets' keyframe flags.

Above the keyframe rate every frame is decoded, except a GOP's *dead tail*: the frames after its
last sample, which no sample needs once the GOP is known to be fixed (see
``PyAVReader._in_dead_tail``; :meth:`KeyframeMeter.next_expected` predicts the next keyframe).
"""

from __future__ import annotations

from collections import deque
from statistics import median

from streamd.sources.state import DecodeMode

# The sample rate may exceed the keyframe rate by this fraction and still use keyframes only:
# a 5 fps sample of a stream with a keyframe every 5th frame of 25 fps must qualify despite
# timestamp rounding.
_RATE_SLACK = 1.02


class KeyframeMeter:
    """The recent keyframe interval of a stream, in seconds of stream time (median of the last few)."""

    def __init__(self, window: int = 5) -> None:
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def reset(self) -> None:
        self._intervals.clear()
        self._last = None

    def add(self, pts: float) -> None:
        """Record a keyframe at ``pts`` seconds; a pts going backwards starts a new measure.

        The same pts twice is one keyframe sent in several packets (slices) and counts once.
        """
        if self._last is not None:
            delta = pts - self._last
            if delta == 0:
                return
            if delta < 0:
                self._intervals.clear()
            else:
                self._intervals.append(delta)
        self._last = pts

    def next_expected(self, tolerance: float) -> float | None:
        """When the next keyframe should come: the last one plus the interval, once at least three
        intervals in a row agreed within ``tolerance`` seconds (a fixed GOP); None otherwise."""
        if self._last is None or len(self._intervals) < 3:
            return None
        if max(self._intervals) - min(self._intervals) > tolerance:
            return None
        return self._last + self._intervals[-1]

    @property
    def interval(self) -> float | None:
        """The median interval once two intervals were seen (one could be a stray keyframe)."""
        if len(self._intervals) < 2:
            return None
        return median(self._intervals)


def choose_mode(setting: str, sample_fps: float, keyframe_interval: float | None) -> DecodeMode:
    """``full`` or ``keyframes`` for a camera's ``decode`` setting and the measured keyframe interval.

    ``auto`` picks keyframes only when ``sample_fps`` is at or below the keyframe rate, and full
    decoding while the interval is still unknown.
    """
    if setting in ("full", "keyframes"):
        return setting  # type: ignore[return-value]
    if keyframe_interval is None or keyframe_interval <= 0:
        return "full"
    return "keyframes" if sample_fps <= _RATE_SLACK / keyframe_interval else "full"

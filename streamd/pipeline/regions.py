"""Where to look for faces in a camera's next sample: around its tracks, where it moved, or everywhere.

Detection is most of the recognition cost (YuNet: ~11 ms of the ~18 ms a sample costs on this
project's 2-core box), yet most of a surveillance frame is a still background. Like Frigate,
which runs its detector only on motion regions, each camera plans its detection per sample:

* **everywhere** on the first sample, after a gap in the stream, every ``full_frame_interval_s``
  of stream time (the safety net: a face that came in without moving, or that motion missed, is
  found within that time), and whenever the regions below would cover ``max_coverage`` of the frame
  or more (a pass over the whole frame then costs about the same and sees everything);
* otherwise only in **regions**: each live track's last box and its predicted box (constant
  velocity) grown by ``track_margin`` of their size on every side (the face moves and turns
  between samples), and the bounding boxes of **motion**
  between this sample and the previous one (grey-level difference on a small copy of the frame,
  as Frigate's motion detector does) that do not touch a track's region (that is the tracked
  person moving), grown by ``motion_margin`` pixels; overlapping regions merge;
* **nowhere** when nothing moved and no track is alive: the sample costs only the motion check.

The regions are detected at the whole frame's scale (:mod:`streamd.faces.regions`), so a face is
found the same way in a region as in a full pass. Detectors that cannot detect a crop at a scale
(dlib's HOG, SCRFD, Paddle, box-only detectors) always get the whole frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from streamd.faces.regions import Rect
from streamd.pipeline.config import RegionDetectionSettings

Scope = Literal["full", "regions", "none"]

#: Width of the grey copy motion is measured on (Frigate uses a similar small frame).
MOTION_WIDTH = 160


@dataclass(frozen=True)
class DetectionPlan:
    """Where one sample is detected: ``regions`` is None for the whole frame, () for nowhere."""

    scope: Scope
    regions: tuple[Rect, ...] | None
    #: The share of the frame's pixels that detection will look at (1.0 for the whole frame).
    coverage: float

    @classmethod
    def everywhere(cls) -> DetectionPlan:
        return cls("full", None, 1.0)


class MotionDetector:
    """Boxes (frame pixels) of what changed since the previous frame given to :meth:`boxes`."""

    def __init__(self, threshold: int, min_area: float) -> None:
        self.threshold = int(threshold)
        self.min_area = float(min_area)  # share of the frame's area
        self._previous: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def boxes(self, image: np.ndarray) -> list[Rect] | None:
        """What moved since the last call; None when there is nothing to compare with yet."""
        height, width = image.shape[:2]
        small_w = min(MOTION_WIDTH, width)
        small_h = max(1, round(height * small_w / width))
        # Every 2nd..4th pixel, then averaged 2x2: 0.25 ms on 1280x720 where INTER_AREA over all
        # of it takes 2 ms (that much per sample would eat a tenth of what regions save).
        coarse = cv2.resize(image, (2 * small_w, 2 * small_h), interpolation=cv2.INTER_NEAREST)
        small = cv2.resize(coarse, (small_w, small_h), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (3, 3), 0)
        previous, self._previous = self._previous, grey
        shape, self._shape = self._shape, image.shape
        if previous is None or shape != image.shape:  # first frame, or the camera changed its size
            return None
        _, mask = cv2.threshold(cv2.absdiff(grey, previous), self.threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(mask, None, iterations=2)  # a face's moving edges into one blob
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        fx, fy = width / small_w, height / small_h
        min_px = self.min_area * small_w * small_h
        out: list[Rect] = []
        for x, y, w, h, area in stats[1:count]:
            if area >= min_px:
                out.append((int(x * fx), int(y * fy), int(np.ceil((x + w) * fx)), int(np.ceil((y + h) * fy))))
        return out


class RegionPlanner:
    """Plans each sample's detection for one camera (see the module docstring). One caller at a time."""

    def __init__(self, settings: RegionDetectionSettings) -> None:
        self.settings = settings
        self.motion = MotionDetector(settings.motion_threshold, settings.motion_min_area) if settings.motion else None
        self._last_full_pts: float | None = None
        self._last_pts: float | None = None

    def plan(self, image: np.ndarray, pts: float, track_boxes: Iterable[Sequence[float]]) -> DetectionPlan:
        """Where to detect in the sample ``image`` taken at stream time ``pts``, given the tracks' boxes."""
        s = self.settings
        if not s.enabled:
            return DetectionPlan.everywhere()
        moved = self.motion.boxes(image) if self.motion is not None else []
        gap = self._last_pts is None or pts < self._last_pts or pts - self._last_pts > s.full_frame_interval_s
        self._last_pts = pts
        due = self._last_full_pts is None or pts - self._last_full_pts >= s.full_frame_interval_s
        if gap or due or moved is None:
            return self._full(pts)
        height, width = image.shape[:2]
        rects = [_grow(box, s.track_margin, width, height) for box in track_boxes]
        # A moving blob that touches a track's region is that person moving (hair, chin, shoulders
        # around the face box): the track's region covers the face. Only motion away from every
        # track adds a region; a newcomer right beside a tracked face waits for the full pass.
        rects += [_pad(r, s.motion_margin, width, height) for r in moved if not any(_overlap(r, t) for t in rects)]
        if not rects:
            return DetectionPlan("none", (), 0.0)
        merged = merge_rects(rects)
        coverage = sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in merged) / float(width * height)
        if coverage >= s.max_coverage:
            return self._full(pts)
        return DetectionPlan("regions", tuple(merged), coverage)

    def _full(self, pts: float) -> DetectionPlan:
        self._last_full_pts = pts
        return DetectionPlan.everywhere()


def _grow(box: Sequence[float], margin: float, width: int, height: int) -> Rect:
    """``box`` grown by ``margin`` of its width and height on every side, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return _clip(x1 - dx, y1 - dy, x2 + dx, y2 + dy, width, height)


def _pad(rect: Rect, pixels: int, width: int, height: int) -> Rect:
    x1, y1, x2, y2 = rect
    return _clip(x1 - pixels, y1 - pixels, x2 + pixels, y2 + pixels, width, height)


def _clip(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Rect:
    return (
        max(0, int(np.floor(x1))),
        max(0, int(np.floor(y1))),
        min(width, int(np.ceil(x2))),
        min(height, int(np.ceil(y2))),
    )


def merge_rects(rects: Iterable[Rect]) -> list[Rect]:
    """The rectangles with overlapping ones replaced by their bounding box, until none overlap."""
    current = [r for r in rects if r[2] > r[0] and r[3] > r[1]]
    changed = True
    while changed:  # a union may reach a rectangle kept earlier: go round again
        changed = False
        out: list[Rect] = []
        for r in current:
            for k, o in enumerate(out):
                if _overlap(r, o):
                    out[k] = (min(r[0], o[0]), min(r[1], o[1]), max(r[2], o[2]), max(r[3], o[3]))
                    changed = True
                    break
            else:
                out.append(r)
        current = out
    return sorted(current)


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

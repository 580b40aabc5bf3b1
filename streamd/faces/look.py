"""A face's *look*: a few numbers per detected face that change when another person takes its place.

Between two embeddings a track is followed on its boxes alone. When one person leaves a spot as
another steps into it (a door, a lane, two people crossing), the boxes still agree, and nothing
would notice the change until the next re-check. The look is cheap enough to measure on every
face of every sample (one small resize of the face box), and it tells the tracker when a face no
longer looks like the one the track saw last, so that the face is embedded at once and the
features decide (see :mod:`streamd.tracking.tracker`).

It holds a tiny grey thumbnail of the face box, normalised to zero mean and unit norm (the layout
of hair, eyes, mouth and background at a glance, independent of brightness and contrast), and the
mean colour of the box's central part (skin tone and light).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the grey thumbnail: enough to see where hair, eyes and mouth are, not who it is.
THUMB_SIDE = 8


@dataclass(frozen=True)
class FaceLook:
    """The look of one face: a normalised ``THUMB_SIDE``² grey thumbnail and the mean BGR colour
    of the central half of its box (0-255)."""

    thumb: np.ndarray
    colour: tuple[float, float, float]

    def similarity(self, other: FaceLook) -> float:
        """Correlation of the two thumbnails, in [-1, 1] (1: the same picture up to brightness)."""
        return float(np.dot(self.thumb, other.thumb))

    def colour_distance(self, other: FaceLook) -> float:
        """Euclidean distance between the two mean colours, in 0-255 units."""
        return math.dist(self.colour, other.colour)


def face_look(image: np.ndarray, box: tuple[float, float, float, float]) -> FaceLook | None:
    """The look of the face in ``box`` of ``image`` (BGR or grey), or None when the box is (almost) empty."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x2, y2 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    thumb = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    thumb = thumb / norm if norm > 1e-6 else np.zeros_like(thumb)
    thumb.setflags(write=False)
    ch, cw = crop.shape[:2]
    centre = crop[ch // 4 : ch - ch // 4, cw // 4 : cw - cw // 4]
    if crop.ndim == 3:
        b, g, r = (float(v) for v in centre.reshape(-1, crop.shape[2]).mean(axis=0)[:3])
    else:
        b = g = r = float(centre.mean())
    return FaceLook(thumb, (b, g, r))

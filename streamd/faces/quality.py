"""The quality gate: faces too small, blurred, turned away or faintly detected are not embedded.

Such faces give features that sit far from the person's gallery vectors, so embedding them costs
time and produces wrong names or noise in the track's vote. The caller counts each rejection by
its reason (``metrics.faces_rejected.labels(camera, reason)``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from streamd.settings import QualitySettings
from streamd.types import Face

#: Every reason :meth:`QualityGate.check` can give, in the order the checks run (cheapest first).
REJECT_REASONS = ("low_score", "too_small", "turned", "blurry")

#: Side of the square the face crop is resized to before measuring blur, so that the figure does
#: not depend on the face's size in pixels. 112 is what ArcFace-style embedders see.
BLUR_SIDE = 112

#: Depth of the nose tip in front of the eye centres, as a fraction of half the distance between
#: the eyes, from a generic 3D face model (about 0.75). A head turned by ``yaw`` moves the nose
#: sideways by depth * sin(yaw) while the half eye distance shrinks to half * cos(yaw), so the
#: nose's offset from the eye midpoint, in half eye distances, is NOSE_DEPTH * tan(yaw).
NOSE_DEPTH = 0.75


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Head turn in degrees from five ArcFace-order landmarks (0 = frontal, sign = direction).

    Roll is removed first by rotating the points so that the eyes are level. A face whose eyes
    coincide (seen in profile) gives 90.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    left, right, nose = lm[0], lm[1], lm[2]
    eyes = right - left
    half = float(np.hypot(*eyes)) / 2.0
    if half < 1e-6:
        return 90.0
    # The nose offset along the eye line, from the eye midpoint, in units of half the eye distance.
    offset = float(np.dot(nose - (left + right) / 2.0, eyes / (2.0 * half))) / half
    return math.degrees(math.atan2(offset, NOSE_DEPTH))


def blur_variance(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Variance of the Laplacian of the face box, resized to BLUR_SIDE x BLUR_SIDE grey pixels.

    High means sharp. The crop is clamped to the image; an empty crop gives 0.
    """
    h, w = image.shape[:2]
    x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x2, y2 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    interp = cv2.INTER_AREA if max(grey.shape) > BLUR_SIDE else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (BLUR_SIDE, BLUR_SIDE), interpolation=interp)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


class QualityGate:
    """Checks one face against :class:`~streamd.settings.QualitySettings`."""

    def __init__(self, settings: QualitySettings) -> None:
        self.settings = settings

    def check(self, image: np.ndarray, face: Face, *, blur: float | None = None) -> str | None:
        """The reason to reject this face (one of :data:`REJECT_REASONS`), or None to embed it.

        Yaw is only checked when the detector gave landmarks. ``blur``: the face's
        :func:`blur_variance` when the caller has it already.
        """
        s = self.settings
        if face.score < s.min_det_score:
            return "low_score"
        if min(face.width, face.height) < s.min_face_px:
            return "too_small"
        if face.landmarks is not None and abs(estimate_yaw(face.landmarks)) > s.max_yaw_deg:
            return "turned"
        if s.min_blur_var > 0 and (blur_variance(image, face.box) if blur is None else blur) < s.min_blur_var:
            return "blurry"
        return None

"""The quality gate and the per-face quality figure the tracker weighs faces by.

The gate (``streamd.faces.quality.QualityGate``) says whether a face is worth embedding at all;
the figure says how much an embedded face counts in its track's vote and whether a new face of
an identified track is better than anything embedded so far (then it is embedded again).
Face *size* is weighed by the tracker itself, so the figure leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from streamd.faces.quality import blur_variance, estimate_yaw
from streamd.types import Face

#: Laplacian variance (on the 112x112 grey face) at which a face counts as fully sharp. Measured
#: for the quality gate: sharp stills 40-200, soft but usable video faces 8-20, smeared under 4.
SHARP_BLUR_VAR = 50.0
#: No face weighs less than this: a poor but gated-in face still carries a little evidence.
MIN_QUALITY = 0.05


class Gate(Protocol):
    """What the pipeline needs of the quality gate (``streamd.faces.quality.QualityGate`` fits)."""

    def check(self, image: np.ndarray, face: Face, *, blur: float | None = None) -> str | None: ...


def face_quality(image: np.ndarray, face: Face, *, blur: float | None = None) -> float:
    """A figure in [MIN_QUALITY, 1]: detector confidence x frontalness x sharpness.

    Detector scores outside [0, 1] (dlib's HOG margins) are clipped; frontalness is cos(yaw)
    from the landmarks (1 without them); sharpness saturates at :data:`SHARP_BLUR_VAR`.
    ``blur``: the face's :func:`blur_variance` when the caller has it already.
    """
    score = min(1.0, max(0.0, face.score))
    frontal = 1.0
    if face.landmarks is not None:
        frontal = max(0.0, math.cos(math.radians(estimate_yaw(face.landmarks))))
    sharp = min(1.0, (blur_variance(image, face.box) if blur is None else blur) / SHARP_BLUR_VAR)
    return float(min(1.0, max(MIN_QUALITY, score * frontal * sharp)))


def assess(
    image: np.ndarray, faces: Sequence[Face], gate: Gate | None, blurs: Sequence[float] | None = None
) -> tuple[list[str | None], list[float | None]]:
    """For each face, the gate's rejection reason (None = embed it) and its quality figure.

    A rejected face has no figure (None): the tracker follows it but never asks to embed it.
    ``blurs``: the faces' :func:`blur_variance` when the runner measured them already.
    """
    if blurs is not None and len(blurs) != len(faces):
        raise ValueError(f"assess: {len(blurs)} sharpness figures for {len(faces)} faces")
    reasons: list[str | None] = []
    quality: list[float | None] = []
    for n, face in enumerate(faces):
        # The gate and the figure both need the sharpness: measure it once.
        blur = blur_variance(image, face.box) if blurs is None else blurs[n]
        reason = gate.check(image, face, blur=blur) if gate is not None else None
        reasons.append(reason)
        quality.append(None if reason is not None else face_quality(image, face, blur=blur))
    return reasons, quality

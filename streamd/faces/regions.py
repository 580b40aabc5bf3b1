"""Face detection inside regions of a frame, at the scale the whole frame would be detected at.

A camera daemon does not need to search every pixel of every sample: faces are where the tracks
are and where something moved (see :mod:`streamd.pipeline.regions`, which picks the regions).
Detecting a crop costs in proportion to its area (YuNet: 13.5 ms for a 640x360 input, 1.5 ms for
160x160), so a frame with three faces on a still background costs a third of a full pass.

What makes a region's faces the same as the full frame's is the *scale*: detectors shrink a
frame to their input size (YuNet to a longer side of ``input_size``), and a
crop must be shrunk by the same factor, not fitted to the input size on its own. Detectors that
can do that say so by having ``detection_scale(shape)`` (the factor they would use for a frame
of that shape) and accepting ``detect(image, scale=...)``; others always get the full frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamd.types import Face

#: (x1, y1, x2, y2) in integer frame pixels, x2/y2 exclusive.
Rect = tuple[int, int, int, int]

#: Crops start and end on multiples of this many detector pixels (the coarsest stride of YuNet
#: and SCRFD, and the padding multiple of YuNet's input).
GRID = 32

#: Faces found in two neighbouring regions (a face across their border) count once.
_DUPLICATE_IOU = 0.4


def supports_regions(detector: Any) -> bool:
    """Whether ``detector`` can detect a crop at a given scale (see the module docstring)."""
    return callable(getattr(detector, "detection_scale", None))


def detect_in_regions(detector: Any, image: np.ndarray, regions: Sequence[Rect] | None) -> list[Face]:
    """The faces of ``image`` inside ``regions`` (None: the whole frame), in frame coordinates.

    Each region is detected at the scale the detector uses for the whole frame; the faces of all
    regions are pooled and duplicates (the same face seen by two regions) removed. A detector
    without region support detects the whole frame whatever ``regions`` says.
    """
    if regions is None or not supports_regions(detector):
        return list(detector.detect(image))
    height, width = image.shape[:2]
    scale = float(detector.detection_scale(image.shape))
    step = grid_step(scale)
    faces: list[Face] = []
    for x1, y1, x2, y2 in regions:
        # On the detector's grid: the crop's pixels after resizing are the full frame's, and the
        # network's strides fall where they fall on the full frame, so its faces are the same.
        x1, y1 = max(0, int(x1) // step * step), max(0, int(y1) // step * step)
        x2, y2 = min(width, -(-int(x2) // step) * step), min(height, -(-int(y2) // step) * step)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        crop = np.ascontiguousarray(image[y1:y2, x1:x2])
        faces.extend(shifted(face, x1, y1) for face in detector.detect(crop, scale=scale))
    return _without_duplicates(faces)


def grid_step(scale: float, stride: int = GRID) -> int:
    """Frame pixels per ``stride`` detector pixels when that is a whole number (else 1: no alignment)."""
    step = stride / scale
    return max(1, round(step)) if abs(step - round(step)) < 1e-3 else 1


def shifted(face: Face, dx: float, dy: float) -> Face:
    """``face`` moved by (dx, dy) pixels (a crop's faces into frame coordinates)."""
    x1, y1, x2, y2 = face.box
    landmarks = None if face.landmarks is None else face.landmarks + np.array([dx, dy], dtype=np.float32)
    return Face(box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), score=face.score, landmarks=landmarks)


def _without_duplicates(faces: list[Face]) -> list[Face]:
    if len(faces) < 2:
        return faces
    from streamd.faces.onnx_engine import nms

    boxes = np.array([f.box for f in faces], dtype=np.float64)
    scores = np.array([f.score for f in faces], dtype=np.float64)
    keep = sorted(nms(boxes, scores, _DUPLICATE_IOU))  # frame order as found, best of each duplicate
    return [faces[i] for i in keep]

"""Face alignment: 5-point similarity warp to the ArcFace 112x112 template, or a box crop.

ArcFace-style recognisers (MobileFaceNet, ResNet50_face, ...) were trained on faces warped so that
the eyes, nose tip and mouth corners land on fixed points of a 112x112 image. Getting this warp
exactly right is what makes their accuracy match the published figures, so it follows insightface's
``norm_crop``: a least-squares similarity transform (rotation, uniform scale, translation; Umeyama
1991) from the five detected landmarks to the template, then ``cv2.warpAffine`` with bilinear
interpolation and a black border.

Detectors that give boxes only (some PaddleX models) cannot be aligned; their faces are cut as a
square around the box centre with a margin and resized, which is what those models were trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamd.types import Face

#: The ArcFace 112x112 five-point template (left eye, right eye, nose tip, left and right mouth
#: corner; "left" = the image's left). Both 128-d models in ../shared/models expect it.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix M that best maps ``src`` points onto ``dst`` (least squares).

    ``src`` and ``dst`` are (N, 2) with N >= 2. This is Umeyama's closed form, the estimator of
    scikit-image's ``SimilarityTransform.estimate`` that insightface's alignment uses; unlike
    ``cv2.estimateAffinePartial2D`` it has no RANSAC step, so it is deterministic and uses every point.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"umeyama needs two (N, 2) arrays with N >= 2, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0  # a reflection would fit better; a face is never mirrored, so forbid it
    u, s, vt = np.linalg.svd(cov)
    rot = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = float((s * d).sum() / src_var) if src_var > 0 else 1.0
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = ARCFACE_SIZE,
    template: np.ndarray = ARCFACE_TEMPLATE,
) -> np.ndarray:
    """Warp the face with these five landmarks onto the ArcFace template; returns (size, size, 3).

    ``size`` other than 112 scales the template with it (insightface's convention for 128 and 224).
    """
    dst = np.asarray(template, dtype=np.float64) * (size / ARCFACE_SIZE)
    m = umeyama(landmarks, dst)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def crop_face(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    size: int = ARCFACE_SIZE,
    margin: float = 0.2,
) -> np.ndarray:
    """A square crop around the box centre, ``margin`` of the longer box side added on each side.

    Parts outside the image are black, so a face at the border is not stretched.
    """
    x1, y1, x2, y2 = box
    side = int(round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)))
    if side <= 0:
        raise ValueError(f"cannot crop a face from an empty box {box}")
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    h, w = image.shape[:2]
    canvas = np.zeros((side, side) + image.shape[2:], dtype=image.dtype)
    sx1, sy1 = max(left, 0), max(top, 0)
    sx2, sy2 = min(left + side, w), min(top + side, h)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    # INTER_AREA averages when shrinking (no aliasing); INTER_LINEAR when enlarging.
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interp)


def face_chip(image: np.ndarray, face: Face, size: int = ARCFACE_SIZE, margin: float = 0.2) -> np.ndarray:
    """Aligned with the landmarks when the detector gave them, else cropped from the box."""
    if face.landmarks is not None:
        return align_face(image, face.landmarks, size)
    return crop_face(image, face.box, size, margin)

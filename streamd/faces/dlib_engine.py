"""dlib face engines: HOG or CNN (mmod) detection with 5-point landmarks, and the 128-d ResNet.

These are the models of the ``face_recognition`` library (``face_recognition_models`` package),
so results match what its users know. Construct them through :mod:`streamd.faces.factory`.

Landmarks. dlib's 5-point shape predictor gives the two corners of each eye and the bottom of the
nose; streamd's :class:`~streamd.types.Face` carries the five ArcFace points (eye centres, nose tip,
mouth corners) so that any detector can feed any embedder. The conversion fits dlib's own chip
template to the five dlib points (exactly what ``dlib.get_face_chip`` does) and places the ArcFace
points where they sit in that template (:data:`ARCFACE_IN_DLIB_TEMPLATE`); eye centres and nose keep
their measured offsets from the fit, so the landmarks still show a turned head. The embedder does
the reverse: it fits the ArcFace points to the same template and hands dlib the five points it
implies. A dlib-detected face is then cut almost as ``face_recognition`` cuts it: on LFW its
vector agrees with the one from dlib's own five points to cosine 0.9993 (median; 0.9935 worst).

Threshold. dlib's rule is "same person when the Euclidean distance between raw descriptors is
below 0.6". streamd L2-normalises every vector and compares by cosine (dot product); the
descriptors' norms are about 1.43, so the rule maps to a cosine threshold of 0.91, checked on
LFW. streamd's default is stricter (:data:`~streamd.faces.calibration.DLIB_DEFAULT_THRESHOLD`,
chosen on the tuning half for open-set identification, where a stranger given a name is the costly error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from streamd.faces.align import invert_affine, transform_points, umeyama
from streamd.faces.calibration import DLIB_DEFAULT_THRESHOLD, DLIB_SAME_PERSON_THRESHOLD
from streamd.faces.modelfile import file_sha256
from streamd.faces.vectors import flip_average, l2_normalise
from streamd.types import Face

#: dlib's 5-point chip template (``get_face_chip_details`` in dlib/image_transforms/interpolation.h),
#: in units of the chip side with no padding: the image-right eye's outer and inner corner, the
#: image-left eye's outer and inner corner, and the bottom of the nose.
DLIB_5PT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

#: Where the five ArcFace points (left eye, right eye, nose tip, left and right mouth corner) sit in
#: dlib's chip template above: the mean of YuNet's landmarks mapped into the template frame by the
#: dlib 5-point fit, over 382 faces of LFW View-1 test images that both detectors found in
#: agreement (each point within 0.1 of the median; the rest are turned heads or other faces).
ARCFACE_IN_DLIB_TEMPLATE = np.array(
    [
        [0.2280, 0.2015],
        [0.7620, 0.2034],
        [0.5013, 0.5163],
        [0.2628, 0.7665],
        [0.7254, 0.7670],
    ]
)

# The calibrated thresholds (naming, same-person gate) live with the other embedders' in
# streamd.faces.calibration; docs/accuracy.md has the curves they were chosen from.

# Which dlib points make up each ArcFace point whose measured offset is kept: eye centre = mean
# of the two corners, nose tip follows the nose bottom. Mouth corners are not seen by the model.
_MEASURED = ((0, (2, 3)), (1, (0, 1)), (2, (4,)))

#: The chip dlib's ResNet was trained on: 150x150 with 25 % padding (face_recognition's default).
_CHIP_SIZE = 150
_CHIP_PADDING = 0.25


def dlib_points_to_arcface(points: np.ndarray) -> np.ndarray:
    """dlib 5-point shape (5, 2) in image pixels -> the five ArcFace landmarks (5, 2)."""
    points = np.asarray(points, dtype=np.float64)
    to_image = invert_affine(umeyama(points, DLIB_5PT_TEMPLATE))
    fitted_dlib = transform_points(to_image, DLIB_5PT_TEMPLATE)
    arcface = transform_points(to_image, ARCFACE_IN_DLIB_TEMPLATE)
    for target, sources in _MEASURED:
        idx = list(sources)
        arcface[target] += points[idx].mean(axis=0) - fitted_dlib[idx].mean(axis=0)
    return arcface.astype(np.float32)


def arcface_to_dlib_points(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace landmarks -> the dlib 5-point shape whose chip puts them on the template."""
    to_image = invert_affine(umeyama(landmarks, ARCFACE_IN_DLIB_TEMPLATE))
    return transform_points(to_image, DLIB_5PT_TEMPLATE)


def _default_model_path(kind: str) -> Path:
    import face_recognition_models as frm

    locate = {
        "predictor": frm.pose_predictor_five_point_model_location,
        "resnet": frm.face_recognition_model_location,
        "cnn": frm.cnn_face_detector_model_location,
    }[kind]
    return Path(locate())


def _full_object_detection(dlib: Any, box: tuple[float, float, float, float], points: np.ndarray) -> Any:
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in points])
    return dlib.full_object_detection(rect, parts)


class DlibDetector:
    """dlib's HOG (or CNN mmod) face detector plus its 5-point shape predictor.

    ``max_side`` downscales big frames before detection (landmarks are still found on the full
    image). ``retry_upsample_below``: when nothing is found in an image whose longer side is below
    this many pixels, try once more with one more upsample step; small stills (LFW's 250x250,
    gallery photos) often hold faces just under HOG's 80-pixel minimum, and the retry costs nothing
    on frames that have faces.
    """

    def __init__(
        self,
        *,
        model: str = "hog",
        upsample: int = 0,
        det_threshold: float = 0.0,
        max_side: int = 0,
        retry_upsample_below: int = 0,
        predictor_path: Path | None = None,
        cnn_model_path: Path | None = None,
    ) -> None:
        import dlib

        self._dlib = dlib
        self.model = model
        self.name = f"dlib-{model}"
        self.upsample = int(upsample)
        self.det_threshold = float(det_threshold)
        self.max_side = int(max_side)
        self.retry_upsample_below = int(retry_upsample_below)
        self._predictor = dlib.shape_predictor(str(predictor_path or _default_model_path("predictor")))
        if model == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(cnn_model_path or _default_model_path("cnn")))
        else:
            self._hog = dlib.get_frontal_face_detector()

    def _find(self, rgb: np.ndarray, upsample: int) -> list[tuple[Any, float]]:
        if self.model == "cnn":
            found = self._cnn(rgb, upsample)
            return [(d.rect, float(d.confidence)) for d in found if d.confidence >= self.det_threshold]
        rects, scores, _ = self._hog.run(rgb, upsample, self.det_threshold)
        return list(zip(rects, (float(s) for s in scores)))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, with landmarks in ArcFace order."""
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = self._find(small, self.upsample)
        if not found and max(small.shape[:2]) < self.retry_upsample_below and self.upsample < 3:
            found = self._find(small, self.upsample + 1)
        faces = []
        for rect, score in found:
            # dlib's right/bottom are inclusive pixel indices.
            x1, y1 = rect.left() / scale, rect.top() / scale
            x2, y2 = (rect.right() + 1) / scale, (rect.bottom() + 1) / scale
            box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            full_rect = self._dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
            shape = self._predictor(rgb, full_rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, score=score, landmarks=dlib_points_to_arcface(points)))
        return faces


class DlibEmbedder:
    """dlib's ResNet (dlib_face_recognition_resnet_model_v1): 128-d vectors, L2-normalised here.

    The face is cut with ``dlib.get_face_chip``'s alignment (150x150, padding 0.25) from five points
    derived from the face's ArcFace landmarks; faces without landmarks (box-only detectors) get
    them from dlib's shape predictor run on the box, as ``face_recognition`` does. ``flip``: each
    chip is also embedded mirrored, the two unit vectors summed and normalised (a second embedding).
    """

    name = "dlib"
    dim = 128
    default_threshold = DLIB_DEFAULT_THRESHOLD
    same_person_threshold = DLIB_SAME_PERSON_THRESHOLD

    def __init__(
        self,
        *,
        num_jitters: int = 1,
        model_path: Path | None = None,
        predictor_path: Path | None = None,
        flip: bool = False,
    ) -> None:
        import dlib

        self._dlib = dlib
        self.num_jitters = int(num_jitters)
        self.flip = bool(flip)
        path = Path(model_path or _default_model_path("resnet"))
        self._net = dlib.face_recognition_model_v1(str(path))
        self._predictor_path = predictor_path
        self._predictor: Any = None  # loaded on first box-only face
        self.fingerprint = f"dlib-resnet:sha256={file_sha256(path)}:chip={_CHIP_SIZE}/{_CHIP_PADDING}"
        if self.flip:
            # Flip-averaged vectors do not mix with plain ones in one index.
            self.fingerprint += ":flip"

    def _points(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        if face.landmarks is not None:
            return arcface_to_dlib_points(face.landmarks)
        if self._predictor is None:
            self._predictor = self._dlib.shape_predictor(
                str(self._predictor_path or _default_model_path("predictor"))
            )
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        shape = self._predictor(rgb, self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def _shapes(self, rgb: np.ndarray, faces: Sequence[Face]) -> Any:
        shapes = self._dlib.full_object_detections()
        for face in faces:
            shapes.append(_full_object_detection(self._dlib, face.box, self._points(rgb, face)))
        return shapes

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One L2-normalised float32 vector per face, shape (len(faces), 128); flip-averaged when ``flip``."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.flip:
            return flip_average(self.embed_face_chips, self.face_chips(image, faces))
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        vectors = self._net.compute_face_descriptor(rgb, self._shapes(rgb, faces), self.num_jitters, _CHIP_PADDING)
        return l2_normalise(np.array([np.asarray(v) for v in vectors]))

    def face_chips(self, image: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray]:
        """The 150x150 RGB chips dlib's ResNet sees for these faces (``dlib.get_face_chips``, padding 0.25).

        Not named ``embed_chips``: the pipeline hands an embedder with that method 112x112 ArcFace chips.
        """
        if not faces:
            return []
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        chips = self._dlib.get_face_chips(rgb, self._shapes(rgb, faces), size=_CHIP_SIZE, padding=_CHIP_PADDING)
        return [np.asarray(c, dtype=np.uint8) for c in chips]

    def embed_face_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Unit vectors for chips from :meth:`face_chips` (or their mirror images), never flip-averaged."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        vectors = self._net.compute_face_descriptor(batch, self.num_jitters)
        return l2_normalise(np.array([np.asarray(v) for v in vectors]))

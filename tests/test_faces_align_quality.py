"""Units: alignment, the quality gate, the dlib landmark mapping, the FaceEngine facade, factory errors.

No models here: hand-made images, points and fake engines.
"""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np
import pytest

from streamd.errors import EngineUnavailable, ModelError
from streamd.faces.align import ARCFACE_TEMPLATE, align_face, crop_face, face_chip, transform_points, umeyama
from streamd.faces.dlib_engine import DLIB_5PT_TEMPLATE, arcface_to_dlib_points, dlib_points_to_arcface
from streamd.faces.engine import FaceEngine, FaceResult
from streamd.faces.factory import create_detector, create_embedder
from streamd.faces.quality import NOSE_DEPTH, QualityGate, blur_variance, estimate_yaw
from streamd.settings import OnnxDetectorSettings, OnnxEmbedderSettings, QualitySettings
from streamd.types import Face


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def checkerboard(side: int, cell: int) -> np.ndarray:
    ys, xs = np.mgrid[:side, :side]
    board = (((xs // cell) + (ys // cell)) % 2 * 255).astype(np.uint8)
    return cv2.cvtColor(board, cv2.COLOR_GRAY2BGR)


# --------------------------------------------------------------------------- alignment


def test_umeyama_recovers_a_known_similarity():
    # given points moved by a known rotation, scale and shift
    m_true = similarity(25.0, 2.5, 40.0, -7.0)
    dst = transform_points(m_true, ARCFACE_TEMPLATE)

    # when the transform is estimated back
    m = umeyama(ARCFACE_TEMPLATE, dst)

    # then it is the same matrix
    np.testing.assert_allclose(m, m_true, atol=1e-9)


def test_umeyama_never_mirrors():
    # given landmarks mirrored left-right (what a reflection would fit exactly)
    mirrored = ARCFACE_TEMPLATE.astype(np.float64) * [-1.0, 1.0]

    # when fitted
    m = umeyama(mirrored, ARCFACE_TEMPLATE)

    # then the result is a proper rotation (positive determinant), never a reflection
    assert np.linalg.det(m[:, :2]) > 0


@pytest.mark.parametrize(
    "src, dst, message",
    [
        (np.zeros((1, 2)), np.zeros((1, 2)), "N >= 2"),
        (np.zeros((5, 2)), np.zeros((4, 2)), "(5, 2) and (4, 2)"),
        (np.zeros((5, 3)), np.zeros((5, 3)), "(5, 3)"),
    ],
)
def test_umeyama_rejects_bad_point_sets(src, dst, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        umeyama(src, dst)


def test_align_face_puts_the_landmarks_on_the_template():
    # given an image with five bright dots where a rotated, enlarged face's landmarks are
    m = similarity(-30.0, 3.0, 200.0, 60.0)
    landmarks = transform_points(m, ARCFACE_TEMPLATE)
    image = np.zeros((600, 700, 3), dtype=np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 6, (255, 255, 255), -1)

    # when aligned
    chip = align_face(image, landmarks)

    # then the chip is 112x112 and each dot sits on its template point
    assert chip.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert chip[int(round(y)), int(round(x))].min() > 200


def test_crop_face_pads_outside_the_image_with_black():
    # given a white image and a box that sticks out of its left edge
    image = np.full((200, 200, 3), 255, dtype=np.uint8)

    # when cropped with a margin
    chip = crop_face(image, (-40.0, 50.0, 60.0, 150.0), size=64, margin=0.2)

    # then the chip is square, black on the left and white in the middle
    assert chip.shape == (64, 64, 3)
    assert chip[32, 2].max() == 0
    assert chip[32, 50].min() == 255


def test_face_chip_crops_when_there_are_no_landmarks():
    # given a face with a box only
    image = checkerboard(300, 10)
    face = Face(box=(100.0, 100.0, 200.0, 200.0), score=0.9)

    # when a chip is taken
    chip = face_chip(image, face, size=112, margin=0.0)

    # then it is exactly the box, resized
    expected = cv2.resize(image[100:200, 100:200], (112, 112), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(chip, expected)


# --------------------------------------------------------------------------- quality


def landmarks_with_yaw(yaw_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """ArcFace-template landmarks whose nose is moved as a head turned by yaw_deg would move it."""
    lm = ARCFACE_TEMPLATE.astype(np.float64).copy()
    half = (lm[1, 0] - lm[0, 0]) / 2.0
    lm[2, 0] = (lm[0, 0] + lm[1, 0]) / 2.0 + NOSE_DEPTH * math.tan(math.radians(yaw_deg)) * half
    lm[2, 1] = (lm[0, 1] + lm[1, 1]) / 2.0 + 20.0  # keep the nose below the (slightly tilted) eye line
    return transform_points(similarity(roll_deg, 1.0, 0.0, 0.0), lm)


@pytest.mark.parametrize("yaw", [-50.0, -20.0, 0.0, 15.0, 45.0])
@pytest.mark.parametrize("roll", [0.0, 35.0])
def test_estimate_yaw_reads_the_head_turn_whatever_the_roll(yaw, roll):
    # given landmarks of a head turned by `yaw` and tilted by `roll`
    lm = landmarks_with_yaw(yaw, roll)

    # when the yaw is estimated
    estimate = estimate_yaw(lm)

    # then it is the turn, independent of the tilt (the template's eyes are 0.1 degree off level)
    assert estimate == pytest.approx(yaw, abs=0.5)


def test_estimate_yaw_of_a_profile_with_coinciding_eyes_is_90():
    lm = ARCFACE_TEMPLATE.copy()
    lm[1] = lm[0]
    assert estimate_yaw(lm) == 90.0


def test_blur_variance_is_high_for_sharp_and_low_for_blurred_faces():
    # given a sharp pattern and the same pattern blurred
    sharp = checkerboard(200, 8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)

    # when measured over the same box
    box = (0.0, 0.0, 200.0, 200.0)

    # then the sharp one scores far higher
    assert blur_variance(sharp, box) > 10 * blur_variance(blurred, box)


def test_blur_variance_does_not_depend_on_the_face_size():
    # given the same pattern at two sizes (each cell is the same fraction of the face)
    small, large = checkerboard(112, 14), checkerboard(448, 56)

    # when measured over the whole face
    v_small = blur_variance(small, (0.0, 0.0, 112.0, 112.0))
    v_large = blur_variance(large, (0.0, 0.0, 448.0, 448.0))

    # then the figures are about the same
    assert v_large == pytest.approx(v_small, rel=0.2)


def _sharp_face(image_side: int = 300, **kw) -> tuple[np.ndarray, Face]:
    image = checkerboard(image_side, 6)
    lm = ARCFACE_TEMPLATE.astype(np.float64) + 50.0
    face = Face(box=kw.pop("box", (50.0, 50.0, 170.0, 170.0)), score=kw.pop("score", 0.9), landmarks=kw.pop("landmarks", lm))
    return kw.pop("image", image), face


@pytest.mark.parametrize(
    "case, expected",
    [
        ({}, None),
        ({"score": 0.2}, "low_score"),
        ({"box": (50.0, 50.0, 80.0, 170.0)}, "too_small"),
        ({"landmarks": landmarks_with_yaw(75.0) + 50.0}, "turned"),
        ({"image": np.full((300, 300, 3), 128, dtype=np.uint8)}, "blurry"),
        ({"landmarks": None, "image": np.full((300, 300, 3), 128, dtype=np.uint8)}, "blurry"),
    ],
    ids=["good", "low_score", "too_small", "turned", "blurry", "blurry_box_only"],
)
def test_quality_gate_reasons(case, expected):
    # given a gate with the usual limits and a face built to fail (or pass) one check
    gate = QualityGate(QualitySettings(min_face_px=40, min_blur_var=20.0, max_yaw_deg=60.0, min_det_score=0.5))
    image, face = _sharp_face(**case)

    # when checked
    reason = gate.check(image, face)

    # then the reason is the one the face was built for
    assert reason == expected


# --------------------------------------------------------------------------- dlib landmark mapping


def test_dlib_points_round_trip_through_arcface_landmarks():
    # given a dlib 5-point shape that is an exact similarity image of dlib's template
    points = transform_points(similarity(12.0, 180.0, 310.0, 95.0), DLIB_5PT_TEMPLATE)

    # when mapped to ArcFace landmarks and back
    arcface = dlib_points_to_arcface(points)
    back = arcface_to_dlib_points(arcface)

    # then the same points come back and the landmarks are in ArcFace order
    np.testing.assert_allclose(back, points, atol=0.01)
    left_eye, right_eye, nose, mouth_l, mouth_r = arcface
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]


def test_dlib_landmarks_keep_a_turned_nose():
    # given a frontal dlib shape and the same shape with the nose moved sideways
    frontal = transform_points(similarity(0.0, 200.0, 0.0, 0.0), DLIB_5PT_TEMPLATE)
    turned = frontal.copy()
    turned[4, 0] += 30.0

    # when mapped
    yaw_frontal = estimate_yaw(dlib_points_to_arcface(frontal))
    yaw_turned = estimate_yaw(dlib_points_to_arcface(turned))

    # then the turn shows in the estimated yaw
    assert abs(yaw_frontal) < 3.0
    assert yaw_turned > yaw_frontal + 10.0


# --------------------------------------------------------------------------- FaceEngine with fakes


class FakeDetector:
    name = "fake"

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self.faces)


class FakeEmbedder:
    """Embeds a face as a unit vector along axis (box width mod dim); records what it was given."""

    name = "fake"
    dim = 4
    fingerprint = "fake:1"
    default_threshold = 0.5

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, image: np.ndarray, faces) -> np.ndarray:
        self.calls.append(len(faces))
        out = np.zeros((len(faces), self.dim), dtype=np.float32)
        for i, f in enumerate(faces):
            out[i, int(f.width) % self.dim] = 1.0
        return out


class FakeGate:
    def check(self, image: np.ndarray, face: Face, *, blur: float | None = None) -> str | None:
        return "too_small" if face.width < 40 else None


def test_analyze_embeds_only_faces_that_pass_the_gate():
    # given three faces, the middle one too small
    faces = [Face((0, 0, 41, 41), 0.9), Face((0, 0, 10, 10), 0.9), Face((0, 0, 42, 42), 0.9)]
    embedder = FakeEmbedder()
    engine = FaceEngine(FakeDetector(faces), embedder, FakeGate())

    # when analysed
    results = engine.analyze(np.zeros((50, 50, 3), np.uint8))

    # then the small one is rejected with its reason, the others carry their own vectors
    assert [r.rejected for r in results] == [None, "too_small", None]
    assert results[1].vector is None
    assert int(np.argmax(results[0].vector)) == 41 % 4 and int(np.argmax(results[2].vector)) == 42 % 4
    assert embedder.calls == [2]


def test_analyze_largest_only_and_without_gate():
    # given a small and a large face
    faces = [Face((0, 0, 10, 10), 0.9), Face((0, 0, 43, 43), 0.8)]
    engine = FaceEngine(FakeDetector(faces), FakeEmbedder(), FakeGate())

    # when only the largest is asked for, without the gate
    results = engine.analyze(np.zeros((50, 50, 3), np.uint8), largest_only=True, apply_gate=False)

    # then exactly that face comes back, embedded
    assert len(results) == 1 and results[0].face.width == 43 and results[0].vector is not None
    assert (engine.dim, engine.fingerprint, engine.default_threshold) == (4, "fake:1", 0.5)


def test_analyze_with_no_face_does_not_call_the_embedder():
    embedder = FakeEmbedder()
    engine = FaceEngine(FakeDetector([]), embedder, None)
    assert engine.analyze(np.zeros((50, 50, 3), np.uint8)) == []
    assert embedder.calls == []


@pytest.mark.parametrize(
    "vector, rejected, message",
    [
        (None, None, "either a vector or a rejection reason"),
        (np.ones(4, np.float32), "blurry", "either a vector or a rejection reason"),
        (np.ones((1, 4), np.float32), None, r"shape \(dim,\), got \(1, 4\)"),
    ],
)
def test_face_result_validates_itself(vector, rejected, message):
    with pytest.raises(ValueError, match=message):
        FaceResult(face=Face((0, 0, 1, 1), 1.0), vector=vector, rejected=rejected)


# --------------------------------------------------------------------------- factory errors


@pytest.mark.parametrize(
    "build, setting",
    [
        (lambda p: create_detector(OnnxDetectorSettings(model_path=p)), "engine.detector.model_path"),
        (lambda p: create_detector(OnnxDetectorSettings(model="scrfd", model_path=p)), "engine.detector.model_path"),
        (lambda p: create_embedder(OnnxEmbedderSettings(model_path=p)), "engine.embedder.model_path"),
    ],
    ids=["yunet", "scrfd", "arcface"],
)
def test_missing_model_file_names_the_path_the_setting_and_the_extra(tmp_path, build, setting):
    # given a model path that does not exist
    path = tmp_path / "models" / "nothing.onnx"

    # when the engine is built
    with pytest.raises(ModelError) as err:
        build(path)

    # then the one-line message names the path, the setting and the extra to install
    message = str(err.value)
    assert str(path) in message and setting in message and "pip install 'streamd[onnx]'" in message
    assert "\n" not in message


def test_model_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ModelError, match=f"{tmp_path}: is a directory, not a model file"):
        create_embedder(OnnxEmbedderSettings(model_path=tmp_path))


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    # given a model file but no onnxruntime (a None entry makes the import fail)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    # when the embedder is built
    with pytest.raises(EngineUnavailable) as err:
        create_embedder(OnnxEmbedderSettings(model_path=model))

    # then the message names the package and the extra
    assert "engine.embedder.type=onnx needs the Python package 'onnxruntime'" in str(err.value)
    assert "pip install 'streamd[onnx]'" in str(err.value)


def test_missing_dlib_names_the_dlib_extra(monkeypatch):
    from streamd.settings import DlibDetectorSettings

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(EngineUnavailable, match=r"engine.detector.type=dlib .*pip install 'streamd\[dlib\]'"):
        create_detector(DlibDetectorSettings())

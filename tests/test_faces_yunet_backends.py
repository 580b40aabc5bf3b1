"""YuNet on onnxruntime (streamd.faces.yunet) finds what cv2.FaceDetectorYN finds, on real faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamd.errors import ModelError
from streamd.faces.onnx_engine import YuNetDetector, resolve_yunet_backend

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

YUNET = "yunet_2023mar/face_detection_yunet_2023mar.onnx"


@pytest.fixture(scope="module")
def detectors(models_dir: Path) -> tuple[YuNetDetector, YuNetDetector]:
    path = models_dir / YUNET
    return YuNetDetector(path, backend="opencv"), YuNetDetector(path, backend="onnxruntime")


def _images(faces_dir: Path) -> list[np.ndarray]:
    paths = sorted((faces_dir / "identities").glob("*/*.jpg"))[:40] + sorted((faces_dir / "group").rglob("*.jpg"))[:10]
    images = [cv2.imread(str(p)) for p in paths]
    return [im for im in images if im is not None]


def _same_faces(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(sorted(a, key=lambda f: f.box), sorted(b, key=lambda f: f.box), strict=True):
        np.testing.assert_allclose(x.box, y.box, atol=0.01)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.01)
        assert x.score == pytest.approx(y.score, abs=1e-4)


def test_both_backends_find_the_same_faces_boxes_and_landmarks(detectors, faces_dir: Path) -> None:
    opencv, ort = detectors
    images = _images(faces_dir)
    found = 0
    for image in images:
        a, b = opencv.detect(image), ort.detect(image)
        _same_faces(a, b)
        found += len(a)
    # portraits and group photos: the comparison covered many faces, not empty results
    assert found >= len(images)


def test_both_backends_agree_on_regions_at_the_frames_scale(detectors, faces_dir: Path) -> None:
    # a 1280x720 frame made of a portrait, and crops of it detected at the whole frame's scale
    opencv, ort = detectors
    portrait = cv2.imread(str(sorted((faces_dir / "identities").glob("*/*.jpg"))[0]))
    frame = cv2.resize(portrait, (1280, 720))
    scale = ort.detection_scale(frame.shape)
    for crop in (frame, frame[64:448, 320:832], frame[:352, :480]):
        _same_faces(opencv.detect(np.ascontiguousarray(crop), scale=scale),
                    ort.detect(np.ascontiguousarray(crop), scale=scale))


def test_a_frame_without_faces_gives_none(detectors) -> None:
    _, ort = detectors
    assert ort.detect(np.full((360, 640, 3), 127, np.uint8)) == []


def test_an_onnx_file_that_is_not_yunet_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(tmp_path / "other.onnx"))
    with pytest.raises(ModelError, match="not a YuNet model"):
        YuNetDetector(tmp_path / "other.onnx", backend="onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot read it as an ONNX file"):
        YuNetDetector(tmp_path / "junk.onnx", backend="onnxruntime")


def test_auto_picks_onnxruntime_when_installed_and_unknown_backends_are_refused() -> None:
    assert resolve_yunet_backend("auto") == "onnxruntime"
    assert resolve_yunet_backend("opencv") == "opencv"
    with pytest.raises(ModelError, match="use auto, onnxruntime or opencv"):
        resolve_yunet_backend("tensorrt")

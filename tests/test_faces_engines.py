"""Integration: the real face models from ../shared/models on real photos from ../shared/data/faces.

Each engine is built once per module. Group photos have a known number of faces (every detector
here finds exactly these), negatives have none, the same person is more similar than two
different people, and vectors are unit-norm float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.errors import ModelError
from streamd.faces.engine import FaceEngine
from streamd.faces.factory import create_detector, create_embedder
from streamd.faces.quality import estimate_yaw
from streamd.images import read_image
from streamd.settings import (
    DlibDetectorSettings,
    DlibEmbedderSettings,
    EngineSettings,
    OnnxDetectorSettings,
    OnnxEmbedderSettings,
)

pytestmark = pytest.mark.shared

DETECTORS = {
    "dlib_hog": lambda m: DlibDetectorSettings(),
    "yunet": lambda m: OnnxDetectorSettings(model="yunet", model_path=m / "yunet_2023mar/face_detection_yunet_2023mar.onnx"),
    "scrfd_500m": lambda m: OnnxDetectorSettings(model="scrfd", model_path=m / "scrfd_det_500m/det_500m.onnx"),
    "scrfd_2.5g": lambda m: OnnxDetectorSettings(model="scrfd", model_path=m / "scrfd_det_2.5g/det_2.5g.onnx"),
}
EMBEDDERS = {
    "dlib_resnet": lambda m: DlibEmbedderSettings(),
    "mobilefacenet": lambda m: OnnxEmbedderSettings(model_path=m / "mobilefacenet_foamliu/MobileFaceNet.onnx"),
}

GROUPS = {
    "group/insightface/t1.jpg": 6,
    "group/facenet-pytorch/multiface.jpg": 6,
    "group/ageitgey/two_people.jpg": 2,
    "group/ageitgey/kit_with_rose.jpg": 2,
}
# Plain negatives (dlib's dogs.jpg and the Scream are hard cases some detectors fire on).
NEGATIVES = [
    "negatives/skimage/coffee.png",
    "negatives/skimage/chelsea.png",
    "negatives/skimage/brick.png",
    "negatives/skimage/hubble_deep_field.jpg",
    "negatives/dlib/giraffe.jpg",
    "negatives/dlib/horses.jpg",
    "negatives/mtcnn/no-faces.jpg",
]
LFW = "pairs/lfw_view1_devtest/images"
SAME = (f"{LFW}/Abdullah_Gul/Abdullah_Gul_0013.jpg", f"{LFW}/Abdullah_Gul/Abdullah_Gul_0014.jpg")
OTHER = f"{LFW}/Adel_Al-Jubeir/Adel_Al-Jubeir_0001.jpg"


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def detector(request, models_dir: Path):
    return create_detector(DETECTORS[request.param](models_dir))


@pytest.fixture(scope="module", params=sorted(EMBEDDERS))
def embedder(request, models_dir: Path):
    return create_embedder(EMBEDDERS[request.param](models_dir))


@pytest.fixture(scope="module")
def yunet(models_dir: Path):
    return create_detector(DETECTORS["yunet"](models_dir))


@pytest.mark.parametrize("photo, count", sorted(GROUPS.items()))
def test_detectors_count_the_faces_of_group_photos(detector, faces_dir, photo, count):
    # given a group photo with a known number of faces
    image = read_image(faces_dir / photo)

    # when faces are detected
    faces = detector.detect(image)

    # then each is found once, inside the image, with five landmarks inside (or near) its box
    assert len(faces) == count
    h, w = image.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert face.landmarks is not None and face.landmarks.shape == (5, 2)
        pad = 0.25 * face.width
        assert np.all(face.landmarks[:, 0] > x1 - pad) and np.all(face.landmarks[:, 0] < x2 + pad)


def test_detectors_give_landmarks_in_arcface_order(detector, faces_dir):
    # given a frontal portrait
    image = read_image(faces_dir / SAME[0])

    # when its face is detected
    face = max(detector.detect(image), key=lambda f: f.area)

    # then the image-left eye comes first, eyes above the nose above the mouth, and it faces us
    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lex < rex and mlx < mrx
    assert max(ley, rey) < ny < min(mly, mry)
    assert abs(estimate_yaw(face.landmarks)) < 30


@pytest.mark.parametrize("negative", NEGATIVES)
def test_detectors_find_no_face_in_negatives(detector, faces_dir, negative):
    assert detector.detect(read_image(faces_dir / negative)) == []


def test_same_person_is_more_similar_than_different_people(embedder, yunet, faces_dir):
    # given two photos of one person and one of another
    images = [read_image(faces_dir / p) for p in (*SAME, OTHER)]

    # when each largest face is embedded
    vectors = []
    for image in images:
        face = max(yunet.detect(image), key=lambda f: f.area)
        vectors.append(embedder.embed(image, [face])[0])
    a, b, c = vectors

    # then the pair of the same person is the closest, and by a clear gap
    assert float(a @ b) > float(a @ c) + 0.1
    assert float(a @ b) > float(b @ c) + 0.1
    assert float(a @ b) >= embedder.default_threshold


def test_vectors_are_unit_norm_float32_and_batches_match_singles(embedder, yunet, faces_dir):
    # given a group photo's faces
    image = read_image(faces_dir / "group/insightface/t1.jpg")
    faces = yunet.detect(image)

    # when embedded together and one by one
    together = embedder.embed(image, faces)
    singles = np.stack([embedder.embed(image, [f])[0] for f in faces])

    # then every vector is a unit float32 row of the model's dimension, the same either way
    assert together.dtype == np.float32 and together.shape == (len(faces), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, singles, atol=1e-5)
    assert embedder.embed(image, []).shape == (0, embedder.dim)


def test_fingerprints_name_the_model_file_hash(embedder):
    assert "sha256=" in embedder.fingerprint and len(embedder.fingerprint.split("sha256=")[1]) >= 64


def test_dlib_embedder_takes_box_only_faces(models_dir, faces_dir):
    # given a face with its landmarks and the same face with a box only
    from streamd.types import Face

    image = read_image(faces_dir / SAME[0])
    detector = create_detector(DETECTORS["dlib_hog"](models_dir))
    embedder = create_embedder(DlibEmbedderSettings())
    face = max(detector.detect(image), key=lambda f: f.area)
    box_only = Face(box=face.box, score=face.score)

    # when both are embedded
    with_lm, without_lm = embedder.embed(image, [face, box_only])

    # then dlib's own shape predictor finds the same alignment
    assert float(with_lm @ without_lm) > 0.98


def test_face_engine_from_settings_analyses_a_group_photo(models_dir, faces_dir):
    # given the ONNX engine with its quality gate
    engine = FaceEngine.from_settings(
        EngineSettings(detector=DETECTORS["yunet"](models_dir), embedder=EMBEDDERS["mobilefacenet"](models_dir))
    )
    image = read_image(faces_dir / "group/insightface/t1.jpg")

    # when the photo is analysed
    results = engine.analyze(image)

    # then each of its six sharp, frontal faces passes the gate and carries a vector
    assert len(results) == 6
    assert all(r.rejected is None and r.vector.shape == (engine.dim,) for r in results)
    assert engine.fingerprint.startswith("onnx-arcface:sha256=")


# --------------------------------------------------------------------------- bad models


def _tiny_onnx(path: Path, shape: list[int | str]) -> Path:
    """A one-node ONNX model (Identity) whose input has ``shape``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "shape, shown",
    [
        ([1, 3, 64, 64], "x [1, 3, 64, 64]"),
        (["N", 112, 112, 3], "x ['N', 112, 112, 3]"),
        ([1, 3, 224], "x [1, 3, 224]"),
    ],
    ids=["64x64", "nhwc", "rank3"],
)
def test_recogniser_with_an_unexpected_input_shape_is_refused(tmp_path, shape, shown):
    # given an ONNX model whose input is not [N,3,112,112]
    model = _tiny_onnx(tmp_path / "wrong.onnx", shape)

    # when it is loaded as the embedder
    with pytest.raises(ModelError) as err:
        create_embedder(OnnxEmbedderSettings(model_path=model))

    # then the message names the file, the expected and the actual shape, and the setting
    message = str(err.value)
    assert message.startswith(f"{model}: the recogniser's input must be [N,3,112,112]")
    assert f"got {shown}" in message and "engine.embedder.model_path" in message


def test_recogniser_whose_output_is_not_a_vector_is_refused(tmp_path):
    model = _tiny_onnx(tmp_path / "identity.onnx", ["N", 3, 112, 112])
    with pytest.raises(ModelError, match=r"output must be \[N,D\], got shape \[1, 3, 112, 112\]"):
        create_embedder(OnnxEmbedderSettings(model_path=model))


@pytest.mark.parametrize(
    "build",
    [
        lambda p: create_embedder(OnnxEmbedderSettings(model_path=p)),
        lambda p: create_detector(OnnxDetectorSettings(model="scrfd", model_path=p)),
    ],
    ids=["arcface", "scrfd"],
)
def test_a_file_that_is_not_onnx_is_refused(tmp_path, build):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match=f"^{path}: cannot load the ONNX model"):
        build(path)


@pytest.mark.parametrize(
    "backend, message",
    [("opencv", "cv2.FaceDetectorYN cannot load it as YuNet"), ("onnxruntime", "cannot read it as an ONNX file")],
)
def test_yunet_refuses_a_file_that_is_not_yunet(tmp_path, backend, message):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match=f"^{path}: {message}"):
        create_detector(OnnxDetectorSettings(model_path=path, yunet_backend=backend))


def test_scrfd_refuses_a_model_without_its_nine_outputs(models_dir):
    path = models_dir / "mobilefacenet_foamliu/MobileFaceNet.onnx"
    with pytest.raises(ModelError, match="not an SCRFD detector"):
        create_detector(OnnxDetectorSettings(model="scrfd", model_path=path))

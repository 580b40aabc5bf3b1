"""The Paddle engines (types ``paddlex`` and ``paddle``) with the real Paddle models in ../shared/models.

The two models are legacy exports (inference.pdmodel, no PaddleX inference.yml). The ``paddlex``
tests run them through ``paddlex.create_model`` on copies in tmp_path with an ``inference.yml``
written next to them (``to_paddlex_layout``, what tools/paddlex_layout.py does for users); the
``paddle`` tests run the shared folders as they are. Paddle starts slowly, so the engines are module-scoped.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from streamd.errors import ConfigError, EngineUnavailable, FeatureLibraryError, ModelError
from streamd.faces import paddle_engine, paddle_models
from streamd.faces.align import crop_face
from streamd.faces.paddle_engine import PaddleDetector, PaddleEmbedder, PaddlexDetector, PaddlexEmbedder
from streamd.settings import (
    PaddleDetectorSettings,
    PaddleEmbedderSettings,
    PaddlexDetectorSettings,
    PaddlexEmbedderSettings,
    load_settings,
)

DET = "blazeface_fpn_ssh_1000e_v1.0_infer"
REC = "mobileface_v1.0_infer"



def _require_paddle() -> None:
    try:
        import paddle.inference  # noqa: F401
    except ImportError:
        reason = "paddlepaddle is not installed (pip install 'streamd[paddle]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true installs the paddle extra, so this must not happen", pytrace=False)
        pytest.skip(reason)


def _require_paddlex() -> None:
    _require_paddle()
    try:
        paddle_engine.import_paddlex("test", "cpu")
    except EngineUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc}; CI=true installs the paddle extra", pytrace=False)
        pytest.skip(str(exc))


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("inference.pdmodel", "inference.pdiparams"):
        shutil.copy2(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def paddlex_dirs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Copies of the legacy exports with the inference.yml PaddleX 3 reads written next to them."""
    root = tmp_path_factory.mktemp("paddlex_models")
    det = paddle_models.to_paddlex_layout(models_dir / DET, root / "BlazeFace-FPN-SSH", "BlazeFace-FPN-SSH")
    rec = paddle_models.to_paddlex_layout(models_dir / REC, root / "MobileFaceNet", "MobileFaceNet")
    return det, rec


@pytest.fixture(scope="module")
def paddlex_engines(paddlex_dirs: tuple[Path, Path]) -> tuple[PaddlexDetector, PaddlexEmbedder]:
    _require_paddlex()
    det_dir, rec_dir = paddlex_dirs
    detector = PaddlexDetector(PaddlexDetectorSettings(model_dir=det_dir, det_threshold=0.5))
    embedder = PaddlexEmbedder(PaddlexEmbedderSettings(model_dir=rec_dir, batch_size=8))
    return detector, embedder


@pytest.fixture(scope="module")
def paddle_engines(models_dir: Path) -> tuple[PaddleDetector, PaddleEmbedder]:
    _require_paddle()
    detector = PaddleDetector(PaddleDetectorSettings(model_dir=models_dir / DET, det_threshold=0.5))
    embedder = PaddleEmbedder(PaddleEmbedderSettings(model_dir=models_dir / REC, batch_size=8))
    return detector, embedder


@pytest.fixture(scope="module")
def photo(faces_dir: Path) -> np.ndarray:
    image = cv2.imread(str(faces_dir / "group" / "single_face" / "mtcnn_ivan.jpg"))
    assert image is not None
    return image


@pytest.fixture(scope="module")
def lfw_pairs(faces_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first same-person and the first different-person pair of LFW View-1 test."""
    lines = (faces_dir / "pairs" / "lfw_view1_devtest" / "pairs.csv").read_text().splitlines()[1:]
    rows = [line.split(",") for line in lines]
    same = next(r for r in rows if r[2] == "1")
    diff = next(r for r in rows if r[2] == "0")
    load = lambda rel: cv2.imread(str(faces_dir / rel))  # noqa: E731
    return [load(same[0]), load(same[1])], [load(diff[0]), load(diff[1])]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --------------------------------------------------------------------------- real models


def test_paddlex_layout_copies_and_describes_the_export(paddlex_dirs, models_dir: Path) -> None:
    # given the converted copies
    det, rec = paddlex_dirs
    # then each holds the program, the weights and an inference.yml naming the PaddleX model,
    # the detector's carrying PaddleDetection's preprocessing, and the source folders are unchanged
    det_yml = yaml.safe_load((det / "inference.yml").read_text())
    rec_yml = yaml.safe_load((rec / "inference.yml").read_text())
    assert det_yml["Global"]["model_name"] == "BlazeFace-FPN-SSH"
    assert [op["type"] for op in det_yml["Preprocess"]] == ["NormalizeImage", "Resize", "Permute"]
    assert rec_yml["Global"]["model_name"] == "MobileFaceNet"
    assert rec_yml["PreProcess"]["transform_ops"][1]["NormalizeImage"]["mean"] == [0.5, 0.5, 0.5]
    assert (rec / "inference.pdiparams").read_bytes() == (models_dir / REC / "inference.pdiparams").read_bytes()
    assert not (models_dir / REC / "inference.yml").exists()


def test_paddlex_detector_finds_the_face_yunet_finds(paddlex_engines, photo, models_dir: Path) -> None:
    # given a photo of one person and YuNet as an independent detector
    from streamd.faces.onnx_engine import YuNetDetector

    yunet = YuNetDetector(models_dir / "yunet_2023mar" / "face_detection_yunet_2023mar.onnx")
    detector, _ = paddlex_engines
    # when both look at it
    ours = detector.detect(photo)
    reference = yunet.detect(photo)
    # then PaddleX's BlazeFace-FPN-SSH finds one face, where YuNet does, with no landmarks
    assert len(ours) == 1 and len(reference) == 1
    assert _iou(ours[0].box, reference[0].box) > 0.5
    assert ours[0].landmarks is None and ours[0].score >= 0.5


def test_yunet_landmarks_align_box_only_faces(models_dir: Path, lfw_pairs) -> None:
    # given BlazeFace-FPN-SSH (boxes only) with landmarks: yunet
    _require_paddle()
    settings = PaddleDetectorSettings(
        model_dir=models_dir / DET,
        det_threshold=0.5,
        landmarks="yunet",
        landmarks_model=models_dir / "yunet_2023mar" / "face_detection_yunet_2023mar.onnx",
    )
    detector = paddle_engine.build_detector(settings)
    image = lfw_pairs[0][0]
    # when it detects a portrait
    faces = detector.detect(image)
    # then the face keeps BlazeFace's box and gains five landmarks inside it, eyes above the mouth
    plain = PaddleDetector(settings.model_copy(update={"landmarks": "none"})).detect(image)
    assert detector.name == "paddle+yunet" and len(faces) == len(plain) == 1
    assert faces[0].box == plain[0].box
    lm = faces[0].landmarks
    x1, y1, x2, y2 = faces[0].box
    assert lm is not None and ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
    assert lm[0, 1] < lm[3, 1] and lm[1, 1] < lm[4, 1] and lm[0, 0] < lm[1, 0]


def test_yunet_landmarks_need_their_model(models_dir: Path, tmp_path: Path) -> None:
    # given landmarks: yunet with a YuNet file that is not there
    missing = tmp_path / "yunet.onnx"
    settings = PaddleDetectorSettings(model_dir=models_dir / DET, landmarks="yunet", landmarks_model=missing)
    # when the detector is built
    with pytest.raises(ModelError) as err:
        paddle_engine.build_detector(settings)
    # then the message names the file and the setting
    assert str(err.value) == (
        f"{missing}: YuNet model file not found (set engine.detector.landmarks_model, or landmarks: none)"
    )


def test_paddlex_and_paddle_paths_agree(paddlex_engines, paddle_engines, photo) -> None:
    # given the same model through PaddleX and through Paddle Inference directly (both with oneDNN)
    pdx_det, pdx_emb = paddlex_engines
    pd_det, pd_emb = paddle_engines
    # when both detect and embed the photo
    pdx_faces, pd_faces = pdx_det.detect(photo), pd_det.detect(photo)
    pdx_vec, pd_vec = pdx_emb.embed(photo, pdx_faces), pd_emb.embed(photo, pd_faces)
    # then they give the same box and the same unit vector
    assert len(pdx_faces) == len(pd_faces) == 1
    np.testing.assert_allclose(pdx_faces[0].box, pd_faces[0].box, atol=0.5)
    assert pdx_vec.shape == pd_vec.shape == (1, 128)
    assert float(pdx_vec[0] @ pd_vec[0]) > 0.999
    assert pdx_emb.dim == pd_emb.dim == 128


@pytest.mark.parametrize("engines", ["paddlex_engines", "paddle_engines"])
def test_same_person_is_closer_than_different_people(engines, lfw_pairs, request) -> None:
    # given a same-person and a different-person LFW pair, faces cut from BlazeFace-FPN-SSH boxes
    detector, embedder = request.getfixturevalue(engines)
    same, diff = lfw_pairs

    def vector(image: np.ndarray) -> np.ndarray:
        faces = detector.detect(image)
        assert faces, "no face found in an LFW image"
        largest = max(faces, key=lambda f: f.area)
        return embedder.embed(image, [largest])[0]

    # when each image is embedded
    same_sim = float(vector(same[0]) @ vector(same[1]))
    diff_sim = float(vector(diff[0]) @ vector(diff[1]))
    # then the same person scores clearly higher, and the vectors are unit length
    assert same_sim > diff_sim + 0.2
    assert np.isclose(np.linalg.norm(vector(same[0])), 1.0, atol=1e-5)


@pytest.mark.parametrize("engines", ["paddlex_engines", "paddle_engines"])
def test_a_batch_gives_the_vectors_of_single_calls(engines, lfw_pairs, request) -> None:
    # given nine face chips (more than one batch of 8)
    detector, embedder = request.getfixturevalue(engines)
    images = lfw_pairs[0] + lfw_pairs[1]
    chips = [crop_face(img, detector.detect(img)[0].box) for img in images]
    chips = (chips * 3)[:9]
    # when embedded together and one by one
    together = embedder.embed_chips(chips)
    alone = np.concatenate([embedder.embed_chips([c]) for c in chips])
    # then the results agree
    assert together.shape == (9, embedder.dim)
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_paddlex_detect_batch_matches_single_images(paddlex_engines, lfw_pairs) -> None:
    # given two images
    detector, _ = paddlex_engines
    images = lfw_pairs[1]
    # when detected in one call and separately
    batched = detector.detect_batch(images)
    single = [detector.detect(img) for img in images]
    # then the boxes are the same
    assert [len(f) for f in batched] == [len(f) for f in single]
    for b, s in zip(batched, single):
        np.testing.assert_allclose([f.box for f in b], [f.box for f in s], atol=0.5)


def test_embedder_fingerprint_names_the_weights(paddlex_engines, paddle_engines) -> None:
    # given both embedders of the same weights
    _, pdx = paddlex_engines
    _, pd = paddle_engines
    # then each fingerprint carries the weights' sha256 (from SOURCES.md) and its own engine
    sha = "a7f078fd47776656b86cd03c3b9a9c69e6bc3f89c23335a8278632d9faa5e44a"
    assert pdx.fingerprint.startswith("paddlex:MobileFaceNet:") and sha in pdx.fingerprint
    assert pd.fingerprint.startswith("paddle:") and sha in pd.fingerprint


def test_an_index_of_another_dimension_is_refused(paddle_engines, tmp_path: Path) -> None:
    # given an index of 512-d vectors (e.g. built with ResNet50_face) and the 128-d MobileFace embedder
    from streamd.index.library import FeatureLibrary

    _, embedder = paddle_engines
    lib = FeatureLibrary.create(512)
    lib.add(np.eye(1, 512, dtype=np.float32), ["someone"])
    lib.save(tmp_path / "index")
    # when it is loaded for this embedder
    with pytest.raises(FeatureLibraryError) as err:
        FeatureLibrary.load(tmp_path / "index", expected_dim=embedder.dim)
    # then the message names both dimensions
    assert "512" in str(err.value) and "128" in str(err.value)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("section", "value", "known"),
    [
        ("detector", "BlazeFace-XL", paddle_models.FACE_DETECTION_MODELS),
        ("embedder", "ArcFace_r100", tuple(paddle_models.FACE_FEATURE_MODELS)),
    ],
)
def test_unknown_model_name_lists_the_known_ones(section: str, value: str, known: tuple[str, ...]) -> None:
    # given a config naming a model PaddleX does not have
    overrides = {"engine": {section: {"type": "paddlex", "model_name": value}}}
    # when it is loaded
    with pytest.raises(ConfigError) as err:
        load_settings(overrides=overrides)
    # then one line names the key, the bad name and every known model
    message = str(err.value)
    assert f"engine.{section}.paddlex.model_name" in message and value in message
    assert all(name in message for name in known)
    assert "\n" not in message


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ((), ("inference.json (or inference.pdmodel)", "inference.pdiparams", "inference.yml")),
        (("inference.pdmodel",), ("inference.pdiparams", "inference.yml")),
        (("inference.pdmodel", "inference.pdiparams"), ("inference.yml",)),
        (("inference.json", "inference.yml"), ("inference.pdiparams",)),
    ],
)
def test_paddlex_model_dir_with_missing_files_names_them(tmp_path: Path, present, missing) -> None:
    # given a model folder lacking some files
    for name in present:
        (tmp_path / name).write_text("x")
    # when the engine is built from it
    with pytest.raises(ModelError) as err:
        PaddlexEmbedder(PaddlexEmbedderSettings(model_dir=tmp_path))
    # then the message names the setting, the folder and each missing file
    message = str(err.value)
    assert message.startswith("engine.embedder: ") and str(tmp_path) in message
    assert all(name in message for name in missing)


def test_paddlex_model_dir_of_another_model_is_refused(paddlex_dirs: tuple[Path, Path]) -> None:
    # given the MobileFaceNet folder configured as ResNet50_face
    _, rec_dir = paddlex_dirs
    # when the engine is built
    with pytest.raises(ModelError) as err:
        PaddlexEmbedder(PaddlexEmbedderSettings(model_name="ResNet50_face", model_dir=rec_dir))
    # then the message says which model the folder holds
    assert "is for MobileFaceNet, but model_name is ResNet50_face" in str(err.value)


def test_paddle_detector_without_its_yml_names_it(tmp_path: Path, models_dir: Path) -> None:
    # given a detector export without infer_cfg.yml
    model_dir = _copy_model(models_dir / DET, tmp_path / "det")
    # when the paddle engine is built from it
    with pytest.raises(ModelError) as err:
        PaddleDetector(PaddleDetectorSettings(model_dir=model_dir))
    # then it asks for the yml
    assert str(err.value) == f"engine.detector: {model_dir} is missing infer_cfg.yml (or inference.yml)"


def test_paddle_embedder_refuses_a_detector(models_dir: Path) -> None:
    # given the detector's folder configured as the recogniser
    _require_paddle()
    # when the paddle embedder is built from it
    with pytest.raises(ModelError) as err:
        PaddleEmbedder(PaddleEmbedderSettings(model_dir=models_dir / DET))
    # then it says what input a recogniser must take
    assert "must take one [N,3,112,112] input" in str(err.value)


@pytest.mark.parametrize(
    ("hidden", "build", "device", "extra"),
    [
        (("paddle", "paddle.inference"), "paddle", "cpu", "streamd[paddle]"),
        (("paddle", "paddle.inference"), "paddle", "gpu:0", "streamd[paddle-gpu]"),
        (("paddle", "paddle.inference"), "paddlex", "cpu", "streamd[paddle]"),
        (("paddlex",), "paddlex", "cpu", "streamd[paddle]"),
        (("paddlex",), "paddlex", "gpu:0", "streamd[paddle-gpu]"),
    ],
)
def test_missing_paddle_names_the_extra(monkeypatch, paddlex_dirs, models_dir, hidden, build, device, extra) -> None:
    # given paddle or paddlex not importable (None in sys.modules makes `import` raise ImportError)
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)
    # when an engine is built
    with pytest.raises(EngineUnavailable) as err:
        if build == "paddle":
            PaddleEmbedder(PaddleEmbedderSettings(model_dir=models_dir / REC), device)
        else:
            PaddlexEmbedder(PaddlexEmbedderSettings(model_dir=paddlex_dirs[1]), device)
    # then the one-line message says which extra to install
    assert f"pip install '{extra}'" in str(err.value) and "\n" not in str(err.value)


def test_missing_paddlex_image_dependencies_are_named(monkeypatch, paddlex_dirs) -> None:
    # given a distribution PaddleX's image readers check for that is not installed
    _require_paddle()
    pytest.importorskip("paddlex")
    monkeypatch.setattr(paddle_engine, "PADDLEX_IMAGE_DEPS", ("opencv-contrib-python", "streamd-no-such-dist"))
    # when the paddlex engine is built
    with pytest.raises(EngineUnavailable) as err:
        PaddlexEmbedder(PaddlexEmbedderSettings(model_dir=paddlex_dirs[1]))
    # then the message names it and the extra
    assert "streamd-no-such-dist" in str(err.value) and "streamd[paddle]" in str(err.value)


@pytest.mark.timeout(60)
def test_offline_without_model_dir_fails_fast_in_one_line(monkeypatch, tmp_path: Path) -> None:
    # given no model_dir, nothing in PaddleX's cache, and a model hoster that cannot be reached
    _require_paddlex()
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(paddle_models, "FACE_MODEL_HOST", "paddlex-model-hoster.invalid")
    # when the detector is built
    with pytest.raises(ModelError) as err:
        PaddlexDetector(PaddlexDetectorSettings(model_name="PP-YOLOE_plus-S_face"))
    # then one line says to set model_dir, and PaddleX's own hoster check was switched off
    message = str(err.value)
    assert "\n" not in message
    assert "PaddleX cannot download PP-YOLOE_plus-S_face" in message
    assert message.endswith("set engine.detector.model_dir to a local model folder")
    assert os.environ.get("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK")

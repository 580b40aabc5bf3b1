"""`streamd models convert`: Paddle inference models to ONNX for the onnx engine.

The graph rewrites are checked on small hand-built ONNX graphs run by onnxruntime; the whole
conversion on the real insightface/PaddlePaddle MobileFaceNet in ``../shared/models``, against
Paddle Inference running the same weights on real faces.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.errors import EngineUnavailable, ModelError
from streamd.faces import convert
from streamd.faces.align import face_chip
from streamd.faces.onnx_engine import OnnxArcFaceEmbedder, YuNetDetector

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REC = "mobileface_v1.0_infer"
YUNET = "yunet_2023mar/face_detection_yunet_2023mar.onnx"


def _conv_prelu_model(slope: np.ndarray, *, weights_as_constants: bool) -> tuple[object, np.ndarray]:
    """Conv(3->C, 3x3) then PRelu with per-channel ``slope``; weights as Constant nodes or initializers."""
    channels = slope.shape[0]
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 1, size=(channels, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 6, 6])
    tensors = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(slope.reshape(channels, 1, 1), "a")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("PRelu", ["c", "a"], ["y"])]
    if weights_as_constants:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors] + nodes
        tensors = []
    graph = helper.make_graph(nodes, "conv_prelu", [x], [y], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    return model, weight


def _run(model: object, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_prelu_is_rewritten_exactly_for_slopes_of_any_sign() -> None:
    # given a Conv + PRelu whose slopes lie outside [0, 1] as the MobileFaceNet's do
    slope = np.array([-1.5, -0.2, 0.0, 0.25, 1.0, 1.4], dtype=np.float32)
    model, _ = _conv_prelu_model(slope, weights_as_constants=False)
    x = np.random.default_rng(2).normal(0, 1, size=(2, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)

    # when PRelu is rewritten
    count = convert.rewrite_prelu(model)

    # then no PRelu is left and the outputs are the same to float rounding
    assert count == 1
    assert "PRelu" not in {n.op_type for n in model.graph.node}
    after = _run(model, x)
    assert np.abs(after - before).max() <= 1e-5 * np.abs(before).max()
    # and the negative and positive halves really differ (the test would not notice a plain ReLU otherwise)
    assert (before < 0).any() and (before > 0).any()


def test_constants_become_initializers_and_the_model_still_computes_the_same() -> None:
    slope = np.linspace(-1, 1, 4).astype(np.float32)
    model, _ = _conv_prelu_model(slope, weights_as_constants=True)
    x = np.random.default_rng(3).normal(0, 1, size=(1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)

    moved = convert.constants_to_initializers(model)

    assert moved == 2
    assert {t.name for t in model.graph.initializer} == {"w", "a"}
    assert "Constant" not in {n.op_type for n in model.graph.node}
    # PRelu slopes that were Constant nodes are initializers now, so the rewrite reaches them too
    assert convert.rewrite_prelu(model) == 1
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def test_a_prelu_with_a_computed_slope_is_left_alone() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Abs", ["x"], ["s"]), helper.make_node("PRelu", ["x", "s"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "computed", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 11)])
    assert convert.rewrite_prelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Abs", "PRelu"]


def test_missing_paddle2onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A module set to None in sys.modules makes its import fail, as if it were not installed.
    monkeypatch.setitem(__import__("sys").modules, "paddle2onnx", None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'streamd\[convert\]'"):
        convert._paddle2onnx_export()


def test_a_folder_without_a_paddle_model_is_refused_by_the_command(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["models", "convert", str(tmp_path / "empty"), str(tmp_path / "out.onnx")])
    assert result.exit_code != 0
    assert "missing inference.json (or inference.pdmodel), inference.pdiparams" in str(result.exception or result.output)
    assert not (tmp_path / "out.onnx").exists()


def test_models_convert_help() -> None:
    result = CliRunner().invoke(cli, ["models", "convert", "--help"])
    assert result.exit_code == 0
    assert "MODEL_DIR" in result.output and "--opset" in result.output


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def converted(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("paddle2onnx", reason="the convert extra (paddle2onnx) is not installed")
    out = tmp_path_factory.mktemp("convert") / "mobileface.onnx"
    result = CliRunner().invoke(cli, ["models", "convert", str(models_dir / REC), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_command_reports_what_it_wrote(converted: tuple[Path, str]) -> None:
    out, text = converted
    assert f"wrote {out} (paddle2onnx 1." in text
    assert "input  x [DynamicDimension.0,3,112,112]" in text
    assert "33 PRelu rewritten" in text
    difference = float(text.split("largest relative difference ")[1].split()[0])
    assert difference <= convert.CHECK_TOLERANCE
    model = onnx.load(str(out))
    assert "PRelu" not in {n.op_type for n in model.graph.node}


def test_the_converted_recogniser_gives_paddle_inferences_vectors(
    converted: tuple[Path, str], models_dir: Path, faces_dir: Path
) -> None:
    # given real faces, aligned with YuNet's landmarks
    from test_paddle_engine import _require_paddle

    _require_paddle()
    from streamd.faces.paddle_engine import PaddleEmbedder
    from streamd.settings import PaddleEmbedderSettings

    detector = YuNetDetector(models_dir / YUNET)
    chips = []
    for person in sorted((faces_dir / "identities").iterdir())[:6]:
        image = cv2.imread(str(sorted(person.glob("*.jpg"))[0]))
        face = max(detector.detect(image), key=lambda f: f.area)
        chips.append(face_chip(image, face))

    # when the converted ONNX file and Paddle Inference embed them
    onnx_vectors = OnnxArcFaceEmbedder(converted[0], mean=127.5, std=127.5).embed_chips(chips)
    paddle_vectors = PaddleEmbedder(PaddleEmbedderSettings(model_dir=models_dir / REC)).embed_chips(chips)

    # then every face gets the same vector from both
    cosines = (onnx_vectors * paddle_vectors).sum(axis=1)
    assert cosines.min() > 0.9999, cosines
    # and different people still get different vectors
    assert float(onnx_vectors[0] @ onnx_vectors[1]) < 0.6


def test_a_damaged_model_is_refused_and_nothing_is_written(models_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("paddle2onnx", reason="the convert extra (paddle2onnx) is not installed")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "inference.pdmodel").write_bytes((models_dir / REC / "inference.pdmodel").read_bytes())
    (damaged / "inference.pdiparams").write_bytes((models_dir / REC / "inference.pdiparams").read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"paddle2onnx 1\.\S+ could not convert the model"):
        convert.convert_paddle_model(damaged, tmp_path / "out.onnx")
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".out.onnx.*")) == []


def test_a_rewrite_that_changed_the_outputs_is_refused(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a rewrite that breaks the graph (as a wrong rewrite would): slopes dropped
    pytest.importorskip("paddle2onnx", reason="the convert extra (paddle2onnx) is not installed")

    def broken(model: object) -> int:
        for node in model.graph.node:
            if node.op_type == "PRelu":
                node.op_type = "Relu"
                del node.input[1:]
        return 0

    monkeypatch.setattr(convert, "rewrite_prelu", broken)
    with pytest.raises(ModelError, match="differs from paddle2onnx's by .* nothing written"):
        convert.convert_paddle_model(models_dir / REC, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()

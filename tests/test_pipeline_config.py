"""A PaddleX face_recognition pipeline file as streamd's recognition settings."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from streamd.errors import ConfigError
from streamd.pipeline_config import pipeline_sections, read_pipeline, settings_from_pipeline
from streamd.settings import load_settings

PROJECT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT / "configs" / "face_recognition.yaml"

PIPELINE = """\
pipeline_name: face_recognition
index: gallery_index
det_threshold: 0.55
rec_threshold: 0.42
rec_topk: 3
device: gpu:1
engine_config:
  run_mode: paddle
  cpu_threads: 2
SubModules:
  Detection:
    module_name: face_detection
    model_name: BlazeFace-FPN-SSH
    model_dir: models/BlazeFace-FPN-SSH
    batch_size: 2
    engine_config:
      enable_new_ir: False
  Recognition:
    module_name: face_feature
    model_name: MobileFaceNet
    model_dir: /opt/models/MobileFaceNet
    batch_size: 8
"""


def _write(folder: Path, text: str, name: str = "face_recognition.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_shipped_config_has_paddlex_defaults() -> None:
    # given PaddleX's own installed face_recognition.yaml and the one streamd ships
    spec = importlib.util.find_spec("paddlex")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("paddlex is not installed; CI=true installs the paddle extra", pytrace=False)
        pytest.skip("paddlex is not installed (pip install 'streamd[paddle]')")
    theirs = Path(spec.submodule_search_locations[0]) / "configs" / "pipelines" / "face_recognition.yaml"
    # when both are read
    # then they describe the same settings
    assert pipeline_sections(SHIPPED) == pipeline_sections(theirs)


def test_shipped_config_maps_to_paddlex_engines() -> None:
    # when streamd's shipped pipeline file is read
    sections = pipeline_sections(SHIPPED)
    # then it names PaddleX's default models, downloaded (no model_dir), and PaddleX's thresholds
    assert sections["engine"]["detector"] == {
        "type": "paddlex", "model_name": "PP-YOLOE_plus-S_face", "model_dir": None, "batch_size": 1, "det_threshold": 0.6,
    }
    assert sections["engine"]["embedder"] == {
        "type": "paddlex", "model_name": "ResNet50_face", "model_dir": None, "batch_size": 1,
    }
    assert sections["index"] == {"rec_threshold": 0.4, "rec_topk": 5}


def test_every_key_maps_onto_streamd_settings(tmp_path: Path) -> None:
    # given a pipeline file using every key streamd maps
    path = _write(tmp_path, PIPELINE)
    # when it becomes streamd's settings
    settings = settings_from_pipeline(path, load_settings())
    # then detector, embedder, device and index come from it, relative paths from its folder
    det, emb = settings.engine.detector, settings.engine.embedder
    assert (det.type, det.model_name, det.model_dir, det.batch_size) == (
        "paddlex", "BlazeFace-FPN-SSH", tmp_path / "models" / "BlazeFace-FPN-SSH", 2,
    )
    assert (det.det_threshold, det.mkldnn, det.threads, det.new_ir) == (0.55, False, 2, False)
    assert (emb.type, emb.model_name, emb.model_dir, emb.batch_size) == (
        "paddlex", "MobileFaceNet", Path("/opt/models/MobileFaceNet"), 8,
    )
    assert (emb.mkldnn, emb.threads, emb.new_ir) == (False, 2, None)
    assert settings.engine.device == "gpu:1"
    assert settings.engine.pipeline == path
    assert (settings.index.dir, settings.index.rec_threshold, settings.index.rec_topk) == (
        tmp_path / "gallery_index", 0.42, 3,
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("rec_topk: 3", "rec_topk: 3\nhamming_radius: 2"), "hamming_radius: unknown key"),
        (("    batch_size: 2", "    batch_size: 2\n    modle_dir: x"), "SubModules.Detection.modle_dir: unknown key"),
        (("pipeline_name: face_recognition", "pipeline_name: PP-ShiTuV2"), "pipeline_name: Input should be 'face_recognition'"),
        (("module_name: face_feature", "module_name: image_feature"), "SubModules.Recognition.module_name: must be face_feature"),
        (("model_name: MobileFaceNet", "model_name: ArcFace"), "unknown PaddleX face_feature model 'ArcFace'; known models: MobileFaceNet, ResNet50_face"),
        (("model_name: BlazeFace-FPN-SSH", "model_name: YOLO_face"), "known models: BlazeFace, BlazeFace-FPN-SSH, PicoDet_LCNet_x2_5_face, PP-YOLOE_plus-S_face"),
        (("run_mode: paddle", "run_mode: trt_fp16"), "engine_config.run_mode: Input should be 'paddle' or 'mkldnn'"),
        (("  cpu_threads: 2", "  cpu_threads: 2\n  use_cinn: True"), "engine_config.use_cinn: unknown key"),
        (("rec_topk: 3", "rec_topk: 0"), "rec_topk: Input should be greater than or equal to 1"),
    ],
)
def test_bad_pipeline_files_name_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    # given a pipeline file with one mistake
    path = _write(tmp_path, PIPELINE.replace(*change, 1))
    # when it is used
    with pytest.raises(ConfigError) as err:
        settings_from_pipeline(path, load_settings())
    # then the message names the file and the key
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_none_strings_are_null_as_in_paddlex(tmp_path: Path) -> None:
    # given PaddleX's spelling of "no index" (the string None, which PaddleX evaluates)
    path = _write(tmp_path, PIPELINE.replace("index: gallery_index", "index: None"))
    # when read
    pipeline = read_pipeline(path)
    # then there is no index
    assert pipeline.index is None


def test_daemon_config_points_at_a_pipeline(tmp_path: Path) -> None:
    # given a daemon config next to a pipeline file, which sets its own rec_threshold
    (tmp_path / "conf").mkdir()
    _write(tmp_path / "conf", PIPELINE)
    config = _write(
        tmp_path / "conf",
        "engine:\n  pipeline: face_recognition.yaml\nindex:\n  rec_threshold: 0.5\n",
        "streamd.yaml",
    )
    # when the daemon's settings are loaded
    settings = load_settings(config)
    # then the pipeline gives the engines and the daemon config's own index key wins
    assert settings.engine.detector.model_name == "BlazeFace-FPN-SSH"
    assert settings.engine.embedder.model_dir == Path("/opt/models/MobileFaceNet")
    assert settings.index.rec_threshold == 0.5
    assert settings.index.rec_topk == 3
    assert settings.index.dir == tmp_path / "conf" / "gallery_index"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("engine:\n  pipeline: face_recognition.yaml\n  detector:\n    type: onnx\n", "engine.detector: cannot be set together with engine.pipeline"),
        ("engine:\n  pipeline: missing.yaml\n", "missing.yaml: config file not found"),
    ],
)
def test_bad_daemon_pipeline_settings(tmp_path: Path, config: str, expected: str) -> None:
    # given a daemon config whose pipeline setting is wrong
    _write(tmp_path, PIPELINE)
    path = _write(tmp_path, config, "streamd.yaml")
    # when loaded
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    # then the one-line message says what is wrong
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_streamd_infer_runs_a_pipeline_file_with_local_models(tmp_path: Path, models_dir: Path, faces_dir: Path) -> None:
    # given the Paddle models in PaddleX's layout, a pipeline file pointing at them (relative
    # paths), and a gallery of three people enrolled with the engines that file describes
    from click.testing import CliRunner

    from streamd.cli import cli
    from streamd.faces.engine import FaceEngine
    from streamd.faces.paddle_models import to_paddlex_layout
    from streamd.index.builder import build_index

    if importlib.util.find_spec("paddle") is None or importlib.util.find_spec("paddlex") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("paddle/paddlex are not installed; CI=true installs the paddle extra", pytrace=False)
        pytest.skip("paddle/paddlex are not installed (pip install 'streamd[paddle]')")
    to_paddlex_layout(models_dir / "blazeface_fpn_ssh_1000e_v1.0_infer", tmp_path / "models" / "det", "BlazeFace-FPN-SSH")
    to_paddlex_layout(models_dir / "mobileface_v1.0_infer", tmp_path / "models" / "rec", "MobileFaceNet")
    pipeline = _write(tmp_path, PIPELINE.replace("index: gallery_index", "index: index")
                      .replace("device: gpu:1", "device: cpu")
                      .replace("rec_threshold: 0.42", "rec_threshold: 0.3")
                      .replace("model_dir: models/BlazeFace-FPN-SSH", "model_dir: models/det")
                      .replace("model_dir: /opt/models/MobileFaceNet", "model_dir: models/rec"))
    people = ("Abdullah_Gul", "Ahmed_Chalabi", "Ai_Sugiyama")
    for person in people:
        (tmp_path / "gallery" / "images" / person).mkdir(parents=True)
        for n in (1, 2, 3):
            name = f"{person}_{n:04d}.jpg"
            shutil.copy2(faces_dir / "identities" / person / name, tmp_path / "gallery" / "images" / person / name)
    settings = settings_from_pipeline(pipeline, load_settings())
    build_index(FaceEngine.from_settings(settings.engine), tmp_path / "gallery", tmp_path / "index")
    probe = faces_dir / "identities" / "Abdullah_Gul" / "Abdullah_Gul_0005.jpg"
    # when streamd infer runs with the pipeline file
    result = CliRunner().invoke(cli, ["infer", "--pipeline", str(pipeline), str(probe)])
    # then it names the person from the gallery the pipeline's index points at
    assert result.exit_code == 0, result.output
    assert "Abdullah_Gul_0005.jpg: 1 face" in result.output
    assert "-> Abdullah_Gul " in result.output

"""Settings: YAML + STREAMD_ environment, and `streamd config check` errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.errors import ConfigError
from streamd.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamd.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_offline_dlib_engine():
    # given no config file
    # when
    settings = load_settings(None)
    # then
    assert settings.engine.detector.type == "dlib"
    assert settings.engine.embedder.type == "dlib"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    # given a file choosing onnx with one threshold and an env override of another
    path = write(tmp_path, "engine:\n  detector:\n    type: onnx\n    det_threshold: 0.5\n")
    monkeypatch.setenv("STREAMD_ENGINE__DETECTOR__DET_THRESHOLD", "0.8")
    monkeypatch.setenv("STREAMD_INDEX__REC_TOPK", "3")
    # when
    settings = load_settings(path)
    # then the environment wins, the rest of the file stays
    assert settings.engine.detector.type == "onnx"
    assert settings.engine.detector.det_threshold == 0.8
    assert settings.index.rec_topk == 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ("engine:\n  detectr: {}\n", "engine.detectr: unknown key"),
        ("index:\n  rec_topk: 0\n", "index.rec_topk: Input should be greater than or equal to 1"),
        ("index:\n  rec_topk: many\n", "index.rec_topk: Input should be a valid integer"),
        ("engine:\n  detector:\n    type: yolo\n", "engine.detector: Input tag 'yolo'"),
        ("engine:\n  detector:\n    type: onnx\n    det_threshold: 2\n", "engine.detector.onnx.det_threshold"),
        ("engine: [1, 2]\n", "engine: Input should be a valid dictionary"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("engine: {detector: \n", "invalid YAML at line"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, expected):
    # given a config with one kind of error
    path = write(tmp_path, text)
    # when / then
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_settings(missing)


def test_config_check_prints_resolved_config(tmp_path):
    # given a valid file
    path = write(tmp_path, "index:\n  rec_topk: 4\n")
    # when
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    # then
    assert result.exit_code == 0, result.output
    assert "rec_topk: 4" in result.output


def test_config_check_exits_2_with_one_line_per_error(tmp_path):
    # given a file with two errors
    path = write(tmp_path, "index:\n  rec_topk: 0\n  colour: red\n")
    # when run as a user would, through the console entry point
    proc = subprocess.run(
        [sys.executable, "-m", "streamd", "config", "check", str(path)], capture_output=True, text=True
    )
    # then
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("index.rec_topk" in line for line in lines)
    assert any("index.colour: unknown key" in line for line in lines)
    assert "Traceback" not in proc.stderr

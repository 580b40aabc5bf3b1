"""`streamd models fetch`: the onnx engine's files from a real HTTP server on loopback, or a folder; checked, atomic.

The real model files come from ../shared/models (served by a real http.server, as a mirror on the
local network would serve them); the upstream hosts are out of reach here and are never contacted.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import free_port

from streamd.cli import cli
from streamd.faces.fetch import CATALOGUE
from streamd.settings import load_settings


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # the request log would land in the command's captured output


@pytest.fixture
def mirror(models_dir: Path, tmp_path: Path) -> Path:
    """A folder with the two catalogue files, as a box owner would carry them on a stick."""
    folder = tmp_path / "stick"
    folder.mkdir()
    shutil.copyfile(models_dir / "yunet_2023mar" / "face_detection_yunet_2023mar.onnx", folder / CATALOGUE["yunet"].filename)
    shutil.copyfile(models_dir / "mobilefacenet_foamliu" / "MobileFaceNet.onnx", folder / CATALOGUE["mobilefacenet"].filename)
    return folder


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[str]:
    """A real HTTP server on a free loopback port serving the mirror folder."""
    handler = functools.partial(QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_downloads_checks_and_prints_the_engine_settings(http_mirror: str, tmp_path: Path) -> None:
    # given an empty models folder and a mirror of the upstream files
    target = tmp_path / "models"
    # when the onnx preset is fetched
    result = CliRunner().invoke(cli, ["models", "fetch", "onnx", "--dir", str(target), "--base-url", http_mirror])
    # then both files are in place, checked, and the settings to use them are printed
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == sorted(m.filename for m in CATALOGUE.values())
    assert result.output.count("fetched, sha256 checked") == 2
    snippet = yaml.safe_load(result.output[result.output.index("engine:"):])
    assert snippet["engine"]["detector"] == {"type": "onnx", "model": "yunet",
                                             "model_path": str(target / CATALOGUE["yunet"].filename)}
    # and a second run keeps the checked files
    again = CliRunner().invoke(cli, ["models", "fetch", "--dir", str(target), "--base-url", http_mirror])
    assert again.exit_code == 0 and again.output.count("already there, checked") == 2


def test_a_damaged_download_is_refused_and_installs_nothing(mirror: Path, http_mirror: str, tmp_path: Path) -> None:
    # given a mirror whose MobileFaceNet was cut short
    damaged = mirror / CATALOGUE["mobilefacenet"].filename
    damaged.write_bytes(damaged.read_bytes()[:1000])
    target = tmp_path / "models"
    # when
    result = CliRunner().invoke(cli, ["models", "fetch", "--dir", str(target), "--base-url", http_mirror])
    # then a one-line error names the file and the expected size, and no partial file is left
    assert result.exit_code == 1
    assert "MobileFaceNet.onnx: got 1000 bytes" in result.output and "nothing was installed" in result.output
    assert sorted(p.name for p in target.iterdir()) == [CATALOGUE["yunet"].filename]


def test_an_unreachable_host_says_how_to_fetch_offline(tmp_path: Path) -> None:
    # given a mirror URL nobody serves
    result = CliRunner().invoke(
        cli, ["models", "fetch", "--dir", str(tmp_path / "m"), "--base-url", f"http://127.0.0.1:{free_port()}"]
    )
    # then
    assert result.exit_code == 1 and "--from DIR" in result.output


def test_fetch_from_a_folder_switches_a_config_keeping_its_comments(mirror: Path, tmp_path: Path) -> None:
    # given a settings file with comments and the default dlib engine
    config = tmp_path / "streamd.yaml"
    config.write_text(
        "# the front door box\n"
        "engine:\n"
        "  detector:\n"
        "    type: dlib  # offline default\n"
        "  embedder:\n"
        "    type: dlib\n"
        "tracking:\n"
        "  min_votes: 4  # kept\n",
        encoding="utf-8",
    )
    target = tmp_path / "models"
    # when the files are copied from the folder and the config switched
    result = CliRunner().invoke(
        cli, ["models", "fetch", "--dir", str(target), "--from", str(mirror), "--config", str(config)]
    )
    # then the config uses the onnx engine, the rest and the comments are kept, the old file is backed up
    assert result.exit_code == 0, result.output
    text = config.read_text(encoding="utf-8")
    assert "# the front door box" in text and "min_votes: 4  # kept" in text
    settings = load_settings(config)
    assert (settings.engine.detector.type, settings.engine.embedder.type) == ("onnx", "onnx")
    assert settings.engine.embedder.model_path == target / CATALOGUE["mobilefacenet"].filename
    assert settings.tracking.min_votes == 4
    assert "type: dlib  # offline default" in (tmp_path / "streamd.yaml.bak").read_text(encoding="utf-8")


def test_a_config_that_would_not_load_is_left_unchanged(mirror: Path, tmp_path: Path) -> None:
    # given a settings file with an error elsewhere
    config = tmp_path / "streamd.yaml"
    config.write_text("tracking:\n  min_votes: 0\n", encoding="utf-8")
    # when
    result = CliRunner().invoke(
        cli, ["models", "fetch", "--dir", str(tmp_path / "m"), "--from", str(mirror), "--config", str(config)]
    )
    # then the error names the key, and the file is as it was
    assert result.exit_code == 1 and "tracking.min_votes" in result.output
    assert config.read_text(encoding="utf-8") == "tracking:\n  min_votes: 0\n"

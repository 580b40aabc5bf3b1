"""`streamd gallery build|append|remove|list` with the real dlib engine on real face photos."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.errors import FeatureLibraryError
from streamd.index.library import FeatureLibrary

PEOPLE = {"Al_Gore": "Al Gore", "Alan_Greenspan": "Alan Greenspan"}


@pytest.fixture()
def runner(monkeypatch) -> CliRunner:
    for key in list(os.environ):
        if key.startswith("STREAMD_"):
            monkeypatch.delenv(key)
    return CliRunner()


@pytest.fixture()
def data_root(tmp_path: Path, faces_dir: Path) -> Path:
    """gallery.txt with tab-separated labels holding spaces, a zero-byte file, a missing file, a non-face."""
    root = tmp_path / "gallery"
    lines = []
    for folder, label in PEOPLE.items():
        for n in (1, 2):
            rel = f"images/{label}/{folder}_{n:04d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(faces_dir / "identities" / folder / f"{folder}_{n:04d}.jpg", root / rel)
            lines.append(f"{rel}\t{label}")
    shutil.copy(faces_dir / "negatives" / "skimage" / "brick.png", root / "images" / "brick.png")
    (root / "images" / "empty.jpg").write_bytes(b"")
    lines += ["images/brick.png\tAl Gore", "images/empty.jpg\tAl Gore", "images/missing.jpg\tAl Gore"]
    (root / "gallery.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["gallery", *args])


def test_build_list_append_remove(runner: CliRunner, data_root: Path, tmp_path: Path, faces_dir: Path) -> None:
    index_dir = tmp_path / "index"
    # when: build
    built = invoke(runner, "build", "--data-root", str(data_root), "--index-dir", str(index_dir))
    # then: every image reported, bad ones skipped, four faces enrolled
    assert built.exit_code == 0, built.output + str(built.exception)
    out = built.stdout
    assert out.count("faces=1") == 4
    assert "skip  gallery.txt:7: images/missing.jpg: file not found" in out
    assert "skip  gallery.txt:5  Al Gore  faces=0  no_face: no face found" in out
    assert "skip  gallery.txt:6  Al Gore  faces=0  unreadable:" in out and "empty file (0 bytes)" in out
    assert "enrolled 4 vectors for 2 labels; skipped 3 (listing 1, no_face 1, unreadable 1)" in out

    # when: list
    listed = invoke(runner, "list", "--index-dir", str(index_dir), "--json")
    # then
    info = json.loads(listed.stdout)
    assert info["labels"] == {"Al Gore": 2, "Alan Greenspan": 2}
    assert (info["index_type"], info["metric_type"], info["dim"], info["vectors"]) == ("Flat", "IP", 128, 4)
    assert info["fingerprint"].startswith("dlib") and info["created_at"]
    text = invoke(runner, "list", "--index-dir", str(index_dir)).stdout
    assert "Al Gore         2" in text and "type:        Flat, metric IP" in text

    # when: append a third person from a bare <ID> tree
    more = tmp_path / "more"
    (more / "Abdullah_Gul").mkdir(parents=True)
    shutil.copy(faces_dir / "identities" / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg", more / "Abdullah_Gul")
    appended = invoke(runner, "append", "--data-root", str(more), "--index-dir", str(index_dir), "-q")
    # then
    assert appended.exit_code == 0, str(appended.exception)
    assert "new ids 4..4" in appended.stdout
    assert "ok  " not in appended.stdout  # --quiet prints only skipped images

    # when: remove by id list, then by label
    by_ids = invoke(runner, "remove", "--index-dir", str(index_dir), "--ids", "0", "9")
    by_label = invoke(runner, "remove", "--index-dir", str(index_dir), "--label", "Alan Greenspan")
    # then
    assert by_ids.exit_code == 0 and "not found: id 9" in by_ids.stdout and "removed 1 vectors; 4 left" in by_ids.stdout
    assert by_label.exit_code == 0 and "removed 2 vectors; 2 left" in by_label.stdout
    assert dict(FeatureLibrary.load(index_dir).labels) == {1: "Al Gore", 4: "Abdullah_Gul"}


def test_remove_from_hnsw32_fails_with_one_line(runner: CliRunner, data_root: Path, tmp_path: Path) -> None:
    # given
    index_dir = tmp_path / "index"
    invoke(runner, "build", "--data-root", str(data_root), "--index-dir", str(index_dir), "--index-type", "HNSW32", "-q")
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("0\n")
    # when
    result = invoke(runner, "remove", "--index-dir", str(index_dir), "--ids-file", str(ids_file))
    # then
    assert result.exit_code == 1
    assert isinstance(result.exception, FeatureLibraryError)
    assert str(result.exception).startswith(f"{index_dir}: HNSW32 indexes do not support remove (as in PaddleX)")
    assert FeatureLibrary.load(index_dir).ntotal == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remove", "--index-dir", "X"], "give --ids ID..., --ids-file FILE or --label NAME"),
        (["remove", "--index-dir", "X", "3"], "ids given without --ids: use `--ids 3 7`"),
        (["remove", "--index-dir", "X", "--ids"], "--ids needs at least one id"),
    ],
)
def test_remove_usage_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_list_of_a_missing_index(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "list", "--index-dir", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert str(result.exception) == f"{tmp_path / 'none'}: index directory not found; rebuild with `streamd gallery build`"


@pytest.mark.parametrize("command", [[], ["build"], ["append"], ["remove"], ["list"]])
def test_help_on_every_command(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout

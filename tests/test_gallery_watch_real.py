"""The daemon's gallery lifecycle with the real dlib engine on real face photos (../shared):
gallery watcher -> atomic save -> index reloader -> the holder the cameras search."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.cli import cli
from streamd.faces.engine import FaceEngine
from streamd.images import read_image
from streamd.index.gallery_watch import RECORD_KEY, GallerySync, GalleryWatcher
from streamd.index.holder import IndexHolder
from streamd.index.library import FeatureLibrary
from streamd.index.notify import LabelChange, on_label_change
from streamd.index.reload import IndexReloader
from streamd.metrics import Metrics
from streamd.settings import EngineSettings


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine.from_settings(EngineSettings())  # dlib: HOG + ResNet 128-d


def photo(faces_dir: Path, person: str, n: int) -> Path:
    return faces_dir / "identities" / person / f"{person}_{n:04d}.jpg"


def enrol(data_root: Path, faces_dir: Path, person: str, n: int) -> None:
    target = data_root / "images" / person / f"{n}.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo(faces_dir, person, n), target)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def labels(holder: IndexHolder) -> set[str]:
    lib = holder.get()
    return set() if lib is None else set(lib.labels.values())


def test_a_person_added_to_the_gallery_is_found_and_a_person_removed_is_not(
    tmp_path: Path, faces_dir: Path, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a gallery of two people, the index built from it by the watcher's first pass, and the
    # reloader serving it; probe vectors from photos that are not in the gallery
    data_root, index_dir = tmp_path / "gallery", tmp_path / "var" / "index"
    for person in ("Al_Gore", "Alan_Greenspan"):
        enrol(data_root, faces_dir, person, 1)
        enrol(data_root, faces_dir, person, 2)
    probe = engine.analyze(read_image(photo(faces_dir, "Abdullah_Gul", 2)), largest_only=True)[0].vector
    syncs: list[GallerySync] = []
    watcher = GalleryWatcher(data_root, index_dir, engine, debounce_s=0.2, on_synced=syncs.append)
    assert watcher.sync() is not None
    holder, metrics = IndexHolder(), Metrics()
    changes: list[LabelChange] = []
    on_label_change(holder, changes.append)
    reloader = IndexReloader(
        index_dir, holder, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint, metrics=metrics,
        debounce_s=0.2,
    )
    assert reloader.start().result == "ok"
    first_ids = dict(FeatureLibrary.load(index_dir).labels)
    watcher.start()
    try:
        # when: a photo of a new person is copied into images/<ID>/
        enrol(data_root, faces_dir, "Abdullah_Gul", 1)
        wait_for(lambda: "Abdullah_Gul" in labels(holder))
        # then: embedded alone and appended (the others keep their ids), and found with a real face vector
        assert syncs[-1].added == ("images/Abdullah_Gul/1.jpg",) and not syncs[-1].rebuilt
        serving = holder.get()
        assert serving is not None and {i: serving.labels[i] for i in first_ids} == first_ids
        best = serving.search(probe, 1)[0][0]
        assert best.label == "Abdullah_Gul" and best.score >= engine.default_threshold

        # when: `streamd gallery append` runs beside the daemon
        other = tmp_path / "more"
        enrol(other, faces_dir, "Ai_Sugiyama", 1)
        for key in [k for k in os.environ if k.startswith("STREAMD_")]:
            monkeypatch.delenv(key)
        appended = CliRunner().invoke(
            cli, ["gallery", "append", "--data-root", str(other), "--index-dir", str(index_dir), "-q"]
        )
        assert appended.exit_code == 0, appended.output
        # then: picked up by the reloader; the watcher's record is intact and it leaves the vector alone
        wait_for(lambda: "Ai_Sugiyama" in labels(holder))
        assert "images/Abdullah_Gul/1.jpg" in FeatureLibrary.load(index_dir).extra[RECORD_KEY]

        # when: the new person's folder is deleted again
        shutil.rmtree(data_root / "images" / "Abdullah_Gul")
        wait_for(lambda: "Abdullah_Gul" not in labels(holder))
        # then: the serving index no longer names them; the trackers were told who left
        assert changes[-1].removed == frozenset({"Abdullah_Gul"})
        assert holder.get().search(probe, 1)[0][0].label != "Abdullah_Gul"  # type: ignore[union-attr]
        assert labels(holder) == {"Al_Gore", "Alan_Greenspan", "Ai_Sugiyama"}
        assert metrics.registry.get_sample_value("streamd_index_reloads_total", {"result": "refused"}) is None
    finally:
        assert watcher.stop() and reloader.stop()

"""GalleryWatcher passes with a fake face engine (unit tests) and real faiss, files and watchfiles.

The fake engine reads what to "find" from the first pixel of the PNGs ``face_png`` writes (see
tests/test_gallery.py): same seed, same vector.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_gallery import FakeEngine, face_png

from streamd.index.builder import append_index, build_index, remove_from_index
from streamd.index.gallery_watch import RECORD_KEY, GalleryWatcher
from streamd.index.holder import IndexHolder
from streamd.index.library import FeatureLibrary
from streamd.index.notify import LabelChange, on_label_change
from streamd.index.reload import IndexReloader
from streamd.metrics import Metrics


def vector_of(seed: int, engine: FakeEngine) -> np.ndarray:
    v = np.random.default_rng(seed * 10).standard_normal(engine.dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "gallery"
    face_png(root / "images" / "ann" / "1.png", seed=1)
    face_png(root / "images" / "ann" / "2.png", seed=2)
    face_png(root / "images" / "bob" / "1.png", seed=3)
    face_png(root / "images" / "bob" / "empty.png", faces=0)
    return root


def watcher(data_root: Path, index_dir: Path, engine: FakeEngine, **kwargs) -> GalleryWatcher:
    return GalleryWatcher(data_root, index_dir, engine, debounce_s=0.05, **kwargs)


def record(index_dir: Path) -> dict:
    return dict(FeatureLibrary.load(index_dir).extra[RECORD_KEY])


def ids(index_dir: Path) -> dict[str, int | None]:
    return {rel: entry["id"] for rel, entry in record(index_dir).items()}


def test_first_pass_builds_the_index_and_records_every_image(tmp_path: Path, data_root: Path, engine: FakeEngine) -> None:
    # when
    result = watcher(data_root, tmp_path / "index", engine).sync()
    # then
    assert result is not None and result.saved and result.vectors == 3
    assert result.added == ("images/ann/1.png", "images/ann/2.png", "images/bob/1.png")
    assert [r.reason for r in result.skipped] == ["no_face"]
    lib = FeatureLibrary.load(tmp_path / "index")
    assert dict(lib.labels) == {0: "ann", 1: "ann", 2: "bob"} and lib.fingerprint == "fake-v1"
    entry = record(tmp_path / "index")["images/bob/empty.png"]
    st = os.stat(data_root / "images" / "bob" / "empty.png")
    assert entry == {"id": None, "label": "bob", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "skipped": "no_face"}


def test_an_unchanged_gallery_embeds_and_saves_nothing(tmp_path: Path, data_root: Path, engine: FakeEngine) -> None:
    # given
    w = watcher(data_root, tmp_path / "index", engine)
    w.sync()
    calls, inode = engine.calls, os.stat(tmp_path / "index").st_ino
    # when
    result = w.sync()
    # then: not even the image without a face is tried again
    assert result is not None and not result.saved
    assert engine.calls == calls and os.stat(tmp_path / "index").st_ino == inode


def test_an_added_image_is_embedded_alone_and_appended(tmp_path: Path, data_root: Path, engine: FakeEngine) -> None:
    # given
    w = watcher(data_root, tmp_path / "index", engine)
    w.sync()
    before, calls = ids(tmp_path / "index"), engine.calls
    # when: a new person
    face_png(data_root / "images" / "cy" / "1.png", seed=9)
    result = w.sync()
    # then: one image embedded, appended under the next id, the others untouched
    assert result is not None and result.added == ("images/cy/1.png",) and not result.rebuilt
    assert engine.calls == calls + 1
    after = ids(tmp_path / "index")
    assert after == {**before, "images/cy/1.png": 3}
    lib = FeatureLibrary.load(tmp_path / "index")
    assert lib.search(vector_of(9, engine), 1)[0][0].label == "cy"


def test_a_replaced_image_is_removed_and_embedded_again(tmp_path: Path, data_root: Path, engine: FakeEngine) -> None:
    # given
    w = watcher(data_root, tmp_path / "index", engine)
    w.sync()
    # when: the same file name now holds another photo
    face_png(data_root / "images" / "ann" / "2.png", seed=7, size=20)
    result = w.sync()
    # then
    assert result is not None and result.removed == ("images/ann/2.png",) and result.added == ("images/ann/2.png",)
    lib = FeatureLibrary.load(tmp_path / "index")
    assert lib.ntotal == 3 and 1 not in lib.labels
    hit = lib.search(vector_of(7, engine), 1)[0][0]
    assert (hit.label, hit.id, hit.score) == ("ann", ids(tmp_path / "index")["images/ann/2.png"], pytest.approx(1.0))


@pytest.mark.parametrize("index_type", ["Flat", "IVF", "HNSW32"])
def test_removed_images_lose_their_vectors(tmp_path: Path, data_root: Path, engine: FakeEngine, index_type: str) -> None:
    # given
    w = watcher(data_root, tmp_path / "index", engine, index_type=index_type)
    w.sync()
    # when: one image of ann goes, then all of bob
    (data_root / "images" / "ann" / "1.png").unlink()
    first = w.sync()
    shutil.rmtree(data_root / "images" / "bob")
    second = w.sync()
    # then: the remaining vector keeps its id (HNSW32 rebuilt its graph without the others)
    assert first is not None and first.removed == ("images/ann/1.png",)
    assert second is not None and set(second.removed) == {"images/bob/1.png", "images/bob/empty.png"}
    lib = FeatureLibrary.load(tmp_path / "index")
    assert lib.index_type == index_type and dict(lib.labels) == {1: "ann"}
    assert ids(tmp_path / "index") == {"images/ann/2.png": 1}
    assert lib.search(vector_of(2, engine), 1)[0][0].id == 1


def test_gallery_txt_label_change_re_enrols_the_image(tmp_path: Path, engine: FakeEngine) -> None:
    # given: the gallery.txt layout
    root = tmp_path / "g"
    face_png(root / "photos" / "a.png", seed=4)
    (root / "gallery.txt").write_text("photos/a.png\tAna Lopez\n", encoding="utf-8")
    w = watcher(root, tmp_path / "index", engine)
    w.sync()
    # when
    (root / "gallery.txt").write_text("photos/a.png\tAna López-Ruiz\n", encoding="utf-8")
    result = w.sync()
    # then
    assert result is not None and result.removed == result.added == ("photos/a.png",)
    assert set(FeatureLibrary.load(tmp_path / "index").labels.values()) == {"Ana López-Ruiz"}


def test_vectors_others_add_are_kept_and_vectors_others_remove_stay_removed(
    tmp_path: Path, data_root: Path, engine: FakeEngine
) -> None:
    # given
    index_dir = tmp_path / "index"
    w = watcher(data_root, index_dir, engine)
    w.sync()
    # when: `streamd gallery append` from another folder, `streamd gallery remove` of a watched image's vector
    other = tmp_path / "other"
    face_png(other / "dee" / "1.png", seed=12)
    append_index(engine, other, index_dir)
    remove_from_index(index_dir, ids=[ids(index_dir)["images/ann/1.png"]])
    face_png(data_root / "images" / "cy" / "1.png", seed=9)
    result = w.sync()
    # then: dee stays, the removed image is not put back while unchanged, cy is added
    assert result is not None and result.added == ("images/cy/1.png",)
    lib = FeatureLibrary.load(index_dir)
    assert sorted(lib.labels.values()) == ["ann", "bob", "cy", "dee"]
    assert record(index_dir)["images/ann/1.png"]["skipped"] == "removed_from_index"
    assert w.sync() is not None and lib.ntotal == FeatureLibrary.load(index_dir).ntotal


def test_an_index_without_a_record_is_rebuilt_once(
    tmp_path: Path, data_root: Path, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # given: an HNSW32 index built by `streamd gallery build` (no record of its images)
    index_dir = tmp_path / "index"
    build_index(engine, data_root, index_dir, index_type="HNSW32")
    # when
    with caplog.at_level(logging.WARNING, logger="streamd.index.gallery_watch"):
        result = watcher(data_root, index_dir, engine).sync()
    # then: rebuilt with its type kept, and recorded
    assert result is not None and result.rebuilt and result.vectors == 3
    assert "has no record of which gallery image made which vector; rebuilding it once" in caplog.text
    assert FeatureLibrary.load(index_dir).index_type == "HNSW32"
    assert set(ids(index_dir)) == {"images/ann/1.png", "images/ann/2.png", "images/bob/1.png", "images/bob/empty.png"}


def test_an_emptied_or_missing_data_root_never_empties_the_index(
    tmp_path: Path, data_root: Path, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    index_dir = tmp_path / "index"
    w = watcher(data_root, index_dir, engine)
    w.sync()
    # when: every image disappears (an unmounted share), then the folder itself
    shutil.rmtree(data_root / "images")
    with caplog.at_level(logging.WARNING, logger="streamd.index.gallery_watch"):
        emptied = w.sync()
        shutil.rmtree(data_root)
        missing = w.sync()
    # then
    assert emptied is None and missing is None
    assert FeatureLibrary.load(index_dir).ntotal == 3
    assert f"{data_root} holds no gallery image but the index has 3 from it; not emptying the index" in caplog.text
    assert f"{data_root}: gallery data_root not found or not a directory; waiting for it" in caplog.text


def test_an_index_of_another_model_is_left_alone(
    tmp_path: Path, data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    index_dir = tmp_path / "index"
    watcher(data_root, index_dir, FakeEngine(fingerprint="fake-v1")).sync()
    w = watcher(data_root, index_dir, FakeEngine(fingerprint="fake-v2"))
    face_png(data_root / "images" / "cy" / "1.png", seed=9)
    # when
    with caplog.at_level(logging.ERROR, logger="streamd.index.gallery_watch"):
        assert w.sync() is None
        assert w.sync() is None
    # then: logged once, nothing changed
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "index made by model fake-v1, engine is model fake-v2" in lines[0]
    assert FeatureLibrary.load(index_dir).ntotal == 3


def test_the_running_watcher_and_reloader_serve_an_added_and_a_removed_person(
    tmp_path: Path, data_root: Path, engine: FakeEngine
) -> None:
    # given: the daemon's wiring: gallery watcher -> index files -> reloader -> holder
    index_dir = tmp_path / "index"
    holder, metrics = IndexHolder(), Metrics()
    changes: list[LabelChange] = []
    on_label_change(holder, changes.append)
    w = watcher(data_root, index_dir, engine)
    w.sync()
    reloader = IndexReloader(
        index_dir, holder, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint, metrics=metrics,
        debounce_s=0.05,
    )
    reloader.start()
    w.start()
    try:
        # when: a new person's image is copied in
        face_png(data_root / "images" / "cy" / "1.png", seed=9)
        _wait(lambda: holder.get() is not None and "cy" in holder.get().labels.values())  # type: ignore[union-attr]
        # then: found by a search of the serving index
        assert holder.get().search(vector_of(9, engine), 1)[0][0].label == "cy"  # type: ignore[union-attr]
        # when: bob's folder is deleted
        shutil.rmtree(data_root / "images" / "bob")
        _wait(lambda: "bob" not in holder.get().labels.values())  # type: ignore[union-attr]
        # then: the label-change hook told who left
        assert changes[-1].removed == frozenset({"bob"}) and changes[-2].added == frozenset({"cy"})
        assert holder.get().search(vector_of(3, engine), 1)[0][0].label != "bob"  # type: ignore[union-attr]
    finally:
        assert w.stop() and reloader.stop()


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)

"""Library pieces the reloader and the gallery watcher rely on (real faiss): extra YAML keys kept
through load/change/save, rebuilding without some ids under the same ids, IVF removal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from streamd.errors import FeatureLibraryError
from streamd.index.builder import remove_from_index
from streamd.index.library import ID_MAP_FILE, FeatureLibrary

DIM = 16
N = 400


def vectors(n: int = N, seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled(index_type: str) -> FeatureLibrary:
    lib = FeatureLibrary.create(DIM, index_type=index_type, fingerprint="fp")  # type: ignore[arg-type]
    lib.add(vectors(), [f"p{i}" for i in range(N)])
    return lib


def test_extra_yaml_keys_survive_load_remove_and_save(tmp_path: Path) -> None:
    # given: a library with an extra key (PaddleX ignores such keys)
    lib = filled("Flat")
    record = {"images/Ana Lopez/1.jpg": {"id": 7, "label": "p7", "size": 10, "mtime_ns": 5}}
    lib.set_extra("gallery_images", record)
    lib.save(tmp_path / "index")
    # when: another writer loads, changes and saves it (streamd gallery remove)
    remove_from_index(tmp_path / "index", ids=[1, 2])
    # then: the key is still there, next to PaddleX's keys
    back = FeatureLibrary.load(tmp_path / "index")
    assert back.extra == {"gallery_images": record} and back.ntotal == N - 2
    raw = yaml.safe_load((tmp_path / "index" / ID_MAP_FILE).read_text(encoding="utf-8"))
    assert raw["gallery_images"] == record and raw["index_type"] == "Flat" and len(raw["id_map"]) == N - 2


@pytest.mark.parametrize("key", ["id_map", "index_type", "model_fingerprint", "feature_dim"])
def test_extra_keys_cannot_shadow_the_library_keys(key: str) -> None:
    with pytest.raises(FeatureLibraryError, match=f"'{key}' is a key the library writes itself; choose another name"):
        FeatureLibrary.create(DIM).set_extra(key, 1)


def test_set_extra_none_deletes_the_key() -> None:
    lib = FeatureLibrary.create(DIM)
    lib.set_extra("k", [1])
    lib.set_extra("k", None)
    assert dict(lib.extra) == {}


@pytest.mark.parametrize("index_type", ["Flat", "IVF", "HNSW32"])
def test_rebuilt_without_keeps_the_other_vectors_under_their_ids(index_type: str) -> None:
    # given
    lib = filled(index_type)
    lib.set_extra("note", "kept")
    x = vectors()
    gone = {0, 17, 250, N - 1}
    # when
    new = lib.rebuilt_without(gone | {10_000})  # an absent id is ignored
    # then: the original is untouched; the new one finds every remaining vector under its own id
    assert lib.ntotal == N and new.ntotal == N - len(gone)
    assert set(new.labels) == set(range(N)) - gone
    found = [hits[0].id for hits in new.search(x, 1)]
    kept = [i for i in range(N) if i not in gone]
    assert [found[i] for i in kept] == kept
    assert (new.index_type, new.fingerprint, dict(new.extra)) == (index_type, "fp", {"note": "kept"})


def test_ivf_remove_keeps_every_remaining_vector_under_its_own_id() -> None:
    # given: IVF (an IDMap2 that compacts its id map on remove although IVF does not renumber)
    lib = filled("IVF")
    x = vectors()
    # when
    lib.remove([3, 5, 7])
    # then: nobody is found under someone else's id and label
    kept = [i for i in range(N) if i not in (3, 5, 7)]
    hits = lib.search(x[kept], 1)
    assert [h[0].id for h in hits] == kept
    assert [h[0].label for h in hits] == [f"p{i}" for i in kept]
    # and: ids continue after the highest, as in PaddleX
    assert lib.add(x[:1], ["again"]) == [N]

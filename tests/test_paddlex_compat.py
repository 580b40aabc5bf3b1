"""Index files interchange with the real PaddleX (``paddlex.inference.pipelines.components.faisser``).

Needs the ``paddle`` extra. Without paddlex the tests skip, except under CI=true where they fail,
as the shared-data fixtures do: CI must exercise the real peer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamd.index.library import FeatureLibrary

DIM = 32
TYPES = ["Flat", "IVF", "HNSW32"]
METRICS = ["IP", "L2"]


@pytest.fixture(scope="module")
def faisser():
    try:
        from paddlex.inference.pipelines.components import faisser
    except ImportError as exc:
        message = f"paddlex is not importable ({exc}); install the `paddle` extra"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return faisser


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gallery(n: int = 300) -> tuple[np.ndarray, list[str]]:
    """n vectors in 30 people clusters, so that nearest neighbours have a meaningful label."""
    centres = unit(30, seed=1)
    people = np.arange(n) % 30
    x = centres[people] + 0.15 * unit(n, seed=2)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"person {p}" for p in people]


def probes(n: int = 60) -> np.ndarray:
    x = unit(30, seed=1)[np.arange(n) % 30] + 0.2 * unit(n, seed=3)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def paddlex_top1(faisser, index_dir: Path, queries: np.ndarray, topk: int = 5) -> tuple[list[str], list[float]]:
    indexer = faisser.FaissIndexer(str(index_dir))
    # score_thres: PaddleX drops a face whose top score is below it; -inf keeps all for comparison.
    preds = indexer(list(queries), score_thres=-np.inf, hamming_radius=None, topk=topk)
    return [p["label"][0] for p in preds], [float(p["score"][0]) for p in preds]


def streamd_score_to_paddlex(metric: str, score: float) -> float:
    """streamd reports 1 - d²/2 for L2; PaddleX the raw squared distance d²."""
    return score if metric == "IP" else 2.0 * (1.0 - score)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", TYPES)
def test_index_saved_by_streamd_searches_the_same_in_paddlex(faisser, tmp_path: Path, index_type, metric) -> None:
    # given
    vectors, labels = gallery()
    lib = FeatureLibrary.create(DIM, index_type=index_type, metric_type=metric, fingerprint="model-a")
    lib.add(vectors, labels)
    lib.save(tmp_path / "index")
    queries = probes()
    # when
    ours = lib.search(queries, topk=5)
    their_labels, their_scores = paddlex_top1(faisser, tmp_path / "index", queries)
    # then
    assert their_labels == [row[0].label for row in ours]
    assert their_scores == pytest.approx([streamd_score_to_paddlex(metric, row[0].score) for row in ours], abs=1e-4)
    index, id_map, metric_type, loaded_type = faisser.IndexData.load(str(tmp_path / "index"))
    assert (metric_type, loaded_type, index.ntotal) == (metric, index_type, 300)
    assert {int(k): v for k, v in id_map.items()} == dict(lib.labels)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", TYPES)
def test_index_built_by_paddlex_loads_and_searches_in_streamd(faisser, tmp_path: Path, index_type, metric) -> None:
    # given: PaddleX's own builder; its predict_func is bypassed by handing it the vectors
    vectors, labels = gallery()
    data = faisser.FaissBuilder.build(
        list(vectors), labels, lambda batch: [{"feature": v} for v in batch], metric_type=metric, index_type=index_type
    )
    data.save(str(tmp_path / "index"))
    queries = probes()
    # when
    lib = FeatureLibrary.load(tmp_path / "index", expected_dim=DIM, expected_fingerprint="model-a")
    ours = lib.search(queries, topk=5)
    their_labels, their_scores = paddlex_top1(faisser, tmp_path / "index", queries)
    # then
    assert (lib.ntotal, lib.index_type, lib.metric_type, lib.fingerprint) == (300, index_type, metric, "")
    assert [row[0].label for row in ours] == their_labels
    assert [streamd_score_to_paddlex(metric, row[0].score) for row in ours] == pytest.approx(their_scores, abs=1e-4)


def test_paddlex_remove_and_append_on_a_streamd_index_stay_readable(faisser, tmp_path: Path) -> None:
    # given
    vectors, labels = gallery()
    lib = FeatureLibrary.create(DIM, fingerprint="model-a")
    lib.add(vectors, labels)
    lib.save(tmp_path / "index")
    # when: PaddleX removes ids 0-9 and appends two vectors
    removed = faisser.FaissBuilder.remove(list(range(10)), str(tmp_path / "index"))
    removed.save(str(tmp_path / "removed"))
    extra = unit(2, seed=9)
    appended = faisser.FaissBuilder.append(
        list(extra), ["new a", "new b"], lambda batch: [{"feature": v} for v in batch], str(tmp_path / "removed")
    )
    appended.save(str(tmp_path / "appended"))
    # then
    back = FeatureLibrary.load(tmp_path / "appended")
    assert back.ntotal == 292
    assert back.labels[300] == "new a" and back.labels[301] == "new b"
    assert 0 not in back.labels
    assert back.search(extra, topk=1)[0][0].label == "new a"


def test_paddlex_index_under_the_documented_index_info_name(faisser, tmp_path: Path) -> None:
    # given
    vectors, labels = gallery(50)
    data = faisser.FaissBuilder.build(list(vectors), labels, lambda b: [{"feature": v} for v in b], index_type="Flat")
    data.save(str(tmp_path / "index"))
    shutil.move(tmp_path / "index" / "id_map.yaml", tmp_path / "index" / "index_info.yaml")
    # when
    lib = FeatureLibrary.load(tmp_path / "index")
    # then
    assert lib.label_counts() == {f"person {p}": (50 // 30) + (1 if p < 50 % 30 else 0) for p in range(30)}

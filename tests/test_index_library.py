"""The feature library with real faiss: round trips, ids, scores, atomic save, validated load."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import yaml

from streamd.errors import FeatureLibraryError
from streamd.index import library as library_module
from streamd.index.infofile import _load_fast, dump_index_info, load_index_info
from streamd.index.library import FeatureLibrary, choose_ivf_nlist, library_lock

DIM = 16
TYPES = ["Flat", "IVF", "HNSW32"]
METRICS = ["IP", "L2"]


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def labelled(n: int) -> list[str]:
    return [f"person {i % 7}" for i in range(n)]


def make_library(tmp_path: Path, n: int = 40, *, index_type: str = "Flat", metric: str = "IP", fp: str = "model-a") -> Path:
    lib = FeatureLibrary.create(DIM, index_type=index_type, metric_type=metric, fingerprint=fp)  # type: ignore[arg-type]
    lib.add(unit(n), labelled(n))
    return lib.save(tmp_path / "index")


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", TYPES)
def test_add_search_save_load_round_trip(tmp_path: Path, index_type: str, metric: str) -> None:
    # given
    vectors = unit(200)
    lib = FeatureLibrary.create(DIM, index_type=index_type, metric_type=metric, fingerprint="model-a")  # type: ignore[arg-type]
    ids = lib.add(vectors, labelled(200))
    # when
    before = lib.search(vectors[:20], topk=3)
    lib.save(tmp_path / "index")
    loaded = FeatureLibrary.load(tmp_path / "index", expected_dim=DIM, expected_fingerprint="model-a")
    after = loaded.search(vectors[:20], topk=3)
    # then
    assert ids == list(range(200))
    assert [m[0].id for m in before] == list(range(20))  # each vector finds itself first
    assert [m[0].score for m in before] == pytest.approx([1.0] * 20, abs=1e-5)
    assert after == before
    assert dict(loaded.labels) == dict(lib.labels)
    assert (loaded.ntotal, loaded.dim, loaded.index_type, loaded.metric_type) == (200, DIM, index_type, metric)
    assert loaded.fingerprint == "model-a"
    assert loaded.created_at == lib.created_at
    assert sorted(os.listdir(tmp_path / "index")) == ["id_map.yaml", "vector.index"]


def test_ids_are_assigned_as_paddlex_does(tmp_path: Path) -> None:
    # given
    lib = FeatureLibrary.create(DIM)
    first = lib.add(unit(3), ["a", "b", "c"])
    # when: the highest id is removed, the next batch starts after the highest remaining id
    lib.remove([2])
    second = lib.add(unit(2, seed=1), ["d", "e"])
    # then
    assert first == [0, 1, 2]
    assert second == [2, 3]
    assert dict(lib.labels) == {0: "a", 1: "b", 2: "d", 3: "e"}


@pytest.mark.parametrize("index_type", ["Flat", "IVF"])
def test_remove_takes_vectors_out_of_search(index_type: str) -> None:
    # given
    vectors = unit(100)
    lib = FeatureLibrary.create(DIM, index_type=index_type)  # type: ignore[arg-type]
    lib.add(vectors, labelled(100))
    # when
    removed = lib.remove([5, 6, 500])
    hits = lib.search(vectors[5:7], topk=100)
    # then
    assert removed == 2
    assert lib.ntotal == 98
    assert all(m.id not in (5, 6) for row in hits for m in row)
    assert 5 not in lib.labels


def test_hnsw32_refuses_remove_like_paddlex() -> None:
    # given
    lib = FeatureLibrary.create(DIM, index_type="HNSW32")
    lib.add(unit(10), labelled(10))
    # when / then
    with pytest.raises(FeatureLibraryError, match="HNSW32 indexes do not support remove \\(as in PaddleX\\)"):
        lib.remove([1])
    assert lib.ntotal == 10


def test_l2_scores_are_the_cosine_similarity_of_unit_vectors() -> None:
    # given
    gallery, queries = unit(50), unit(5, seed=3)
    ip = FeatureLibrary.create(DIM, metric_type="IP")
    l2 = FeatureLibrary.create(DIM, metric_type="L2")
    for lib in (ip, l2):
        lib.add(gallery, labelled(50))
    # when
    ip_hits, l2_hits = ip.search(queries, topk=5), l2.search(queries, topk=5)
    # then
    for a, b in zip(ip_hits, l2_hits):
        assert [m.id for m in a] == [m.id for m in b]
        assert [m.score for m in a] == pytest.approx([m.score for m in b], abs=1e-5)
        assert [m.score for m in a] == pytest.approx(sorted((m.score for m in a), reverse=True))


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1), (77, 1), (78, 2), (10_000, 256), (100_000, 1264), (1_000_000, 4000)],
)
def test_ivf_lists_follow_the_number_of_training_vectors(n: int, expected: int) -> None:
    assert choose_ivf_nlist(n) == expected


def test_ivf_with_few_vectors_falls_back_to_one_exact_list() -> None:
    # given
    vectors = unit(5)
    lib = FeatureLibrary.create(DIM, index_type="IVF")
    # when
    lib.add(vectors, list("abcde"))
    # then
    assert lib.ivf_nlist == 1
    assert [row[0].id for row in lib.search(vectors, topk=1)] == [0, 1, 2, 3, 4]


def test_ivf_retrains_when_refilled_after_being_emptied() -> None:
    # given
    lib = FeatureLibrary.create(DIM, index_type="IVF")
    lib.add(unit(10), labelled(10))
    lib.remove(range(10))
    # when
    lib.add(unit(400, seed=2), labelled(400))
    # then
    assert lib.ivf_nlist == choose_ivf_nlist(400)
    assert lib.ntotal == 400


def test_empty_library_saves_loads_and_searches_to_nothing(tmp_path: Path) -> None:
    # given
    FeatureLibrary.create(DIM, index_type="IVF").save(tmp_path / "index")
    # when
    lib = FeatureLibrary.load(tmp_path / "index")
    # then
    assert lib.ntotal == 0
    assert lib.search(unit(2), topk=5) == [[], []]


def test_topk_larger_than_the_library_returns_every_vector() -> None:
    lib = FeatureLibrary.create(DIM)
    lib.add(unit(3), ["a", "b", "c"])
    assert len(lib.search(unit(1, seed=1), topk=10)[0]) == 3


def test_label_counts_and_ids_for_label() -> None:
    lib = FeatureLibrary.create(DIM)
    lib.add(unit(4), ["ann", "bob", "ann", "ann"])
    assert lib.label_counts() == {"ann": 3, "bob": 1}
    assert lib.ids_for_label("ann") == [0, 2, 3]


def test_copy_is_independent() -> None:
    lib = FeatureLibrary.create(DIM)
    lib.add(unit(4), list("abcd"))
    clone = lib.copy()
    clone.remove([0])
    assert (lib.ntotal, clone.ntotal) == (4, 3)
    assert 0 in lib.labels


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lib: lib.add(unit(2, dim=8), ["a", "b"]), r"vectors to add have shape \(2, 8\), the library holds 16-d"),
        (lambda lib: lib.add(unit(2), ["a"]), "2 vectors but 1 labels"),
        (lambda lib: lib.add(unit(1), [""]), "label '' is not a non-empty string"),
        (lambda lib: lib.add(np.full((1, DIM), np.nan), ["a"]), "vectors to add contain NaN"),
        (lambda lib: lib.search(unit(1, dim=4), topk=1), r"query vectors have shape \(1, 4\)"),
        (lambda lib: lib.search(unit(1), topk=0), "topk must be at least 1"),
    ],
)
def test_bad_vectors_labels_and_topk(call, message: str) -> None:
    lib = FeatureLibrary.create(DIM)
    lib.add(unit(3), ["a", "b", "c"])
    with pytest.raises(FeatureLibraryError, match=message):
        call(lib)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index_type": "PQ"}, "index type 'PQ' is not one of Flat, IVF, HNSW32"),
        ({"metric_type": "hamming"}, "metric type 'hamming' is not one of IP, L2"),
        ({"ivf_nlist": 0}, "ivf_nlist must be at least 1"),
    ],
)
def test_create_refuses_unknown_kinds(kwargs: dict, message: str) -> None:
    with pytest.raises(FeatureLibraryError, match=message):
        FeatureLibrary.create(DIM, **kwargs)


# ---------------------------------------------------------------------- the YAML text


TRICKY_LABELS = [
    "Ana Lopez", "123", "yes", "null", "~", "a: b", "#hash", "- dash", 'quo"te', "'single'", "back\\slash",
    "tab\there", "new\nline", "  padded  ", "中文名", "emoji 😀", "del\x7f", "sep\u2028", "nel\x85", "bad\udcff",
]


def test_id_map_text_reads_the_same_through_pyyaml_and_the_fast_path() -> None:
    # given
    header = {"index_type": "Flat", "metric_type": "IP", "feature_dim": DIM}
    id_map = dict(enumerate(TRICKY_LABELS))
    # when
    text = dump_index_info(header, id_map)
    # then
    assert yaml.safe_load(text) == {**header, "id_map": id_map}  # what PaddleX's YAML loader gets
    assert _load_fast(text) == {**header, "id_map": id_map}
    assert load_index_info(text)["id_map"] == id_map


def test_id_map_written_by_paddlex_style_yaml_dump_is_read() -> None:
    # given: PaddleX's YAMLWriter uses yaml.dump with sorted keys and plain labels
    text = yaml.dump({"index_type": "Flat", "metric_type": "IP", "id_map": {0: "ann", 1: "123"}}, allow_unicode=True)
    # then
    assert _load_fast(text) is None
    assert load_index_info(text)["id_map"] == {0: "ann", 1: "123"}


# ---------------------------------------------------------------------- atomic save


def test_repeated_saves_leave_one_plain_directory_and_no_temporaries(tmp_path: Path) -> None:
    # given
    lib = FeatureLibrary.create(DIM)
    for i in range(3):
        lib.add(unit(1, seed=i), [f"p{i}"])
        # when
        lib.save(tmp_path / "index")
    # then
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert (tmp_path / "index").is_dir() and not (tmp_path / "index").is_symlink()
    assert FeatureLibrary.load(tmp_path / "index").ntotal == 3


def _generation(g: int) -> FeatureLibrary:
    """Generation g: g+1 vectors all labelled gen<g> (so a mixed pair is detectable)."""
    lib = FeatureLibrary.create(DIM, fingerprint="model-a")
    lib.add(unit(g + 1, seed=g), [f"gen{g}"] * (g + 1))
    return lib


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_reader_never_sees_half_an_index_while_a_writer_saves(tmp_path: Path, monkeypatch, exchange: bool) -> None:
    # given
    if not exchange:
        monkeypatch.setattr(library_module, "_exchange", lambda a, b: False)
    target = tmp_path / "index"
    _generation(0).save(target)
    generations = [_generation(g) for g in range(40)]
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                lib = FeatureLibrary.load(target, expected_dim=DIM, expected_fingerprint="model-a")
            except FeatureLibraryError as exc:
                errors.append(str(exc))
                continue
            names = set(lib.labels.values())
            if len(names) != 1 or lib.ntotal != int(next(iter(names))[3:]) + 1:
                errors.append(f"mixed generation: {names} with {lib.ntotal} vectors")
            seen.append(lib.ntotal)

    thread = threading.Thread(target=reader)
    thread.start()
    # when
    try:
        for _ in range(3):
            for lib in generations:
                lib.save(target)
    finally:
        stop.set()
        thread.join(timeout=30)
    # then
    assert errors == []
    assert seen  # the reader did read while the writer saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_failed_save_leaves_the_old_index_untouched(tmp_path: Path, monkeypatch) -> None:
    # given
    target = make_library(tmp_path, 10)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    lib = FeatureLibrary.load(target)
    lib.add(unit(1, seed=5), ["new"])

    def broken_write(index, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    # when
    with pytest.raises(FeatureLibraryError, match=r"cannot save the feature library \(disk full\); nothing was replaced"):
        lib.save(target)
    # then
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_save_refuses_to_replace_a_directory_with_other_files(tmp_path: Path) -> None:
    # given
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"x")
    # when / then
    with pytest.raises(FeatureLibraryError, match="photos: holds other files \\(e.g. holiday.jpg\\) besides a feature library"):
        FeatureLibrary.create(DIM).save(target)
    assert (target / "holiday.jpg").exists()


def test_save_through_a_symlink_replaces_the_directory_it_points_to(tmp_path: Path) -> None:
    # given
    real = make_library(tmp_path, 5)
    link = tmp_path / "current"
    link.symlink_to(real)
    lib = FeatureLibrary.load(link)
    lib.add(unit(1, seed=9), ["x"])
    # when
    lib.save(link)
    # then
    assert link.is_symlink()
    assert FeatureLibrary.load(real).ntotal == 6


def test_stale_temporaries_of_killed_saves_are_cleaned(tmp_path: Path) -> None:
    # given: a temp dir named after a process that no longer exists
    stale = tmp_path / ".index.tmp-999999999-abc"
    stale.mkdir()
    # when
    make_library(tmp_path, 3)
    # then
    assert not stale.exists()


def test_library_lock_serialises_writers(tmp_path: Path) -> None:
    # given
    order: list[str] = []

    def second_writer() -> None:
        with library_lock(tmp_path / "index"):
            order.append("second")

    # when
    with library_lock(tmp_path / "index"):
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.2)  # give the second writer time to (wrongly) get in
        order.append("first")
    thread.join(timeout=5)
    # then
    assert order == ["first", "second"]


# ---------------------------------------------------------------------- validated load


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_yaml(change):
    def edit(index_dir: Path) -> None:
        info = yaml.safe_load((index_dir / "id_map.yaml").read_text())
        change(info)
        (index_dir / "id_map.yaml").write_text(yaml.safe_dump(info))

    return edit


def _replace_vector_index(build):
    def edit(index_dir: Path) -> None:
        faiss.write_index(build(), str(index_dir / "vector.index"))

    return edit


def _plain_flat():
    index = faiss.IndexFlatIP(DIM)
    index.add(unit(40))
    return index


def _hnsw_idmap():
    index = faiss.index_factory(DIM, "IDMap2,HNSW32", faiss.METRIC_INNER_PRODUCT)
    index.add_with_ids(unit(40), np.arange(40))
    return index


BAD_INDEXES = [
    ("missing vector.index", lambda d: (d / "vector.index").unlink(), "index/vector.index: file missing"),
    ("missing id_map.yaml", lambda d: (d / "id_map.yaml").unlink(), "index/id_map.yaml: file missing"),
    ("yaml garbage", lambda d: (d / "id_map.yaml").write_text("id_map: [unclosed\n"), "id_map.yaml: invalid YAML at line"),
    ("yaml not a mapping", lambda d: (d / "id_map.yaml").write_text("- 1\n- 2\n"), "expected a mapping with index_type"),
    ("yaml key missing", _edit_yaml(lambda i: i.pop("metric_type")), "id_map.yaml: missing key\\(s\\) metric_type"),
    ("binary metric", _edit_yaml(lambda i: i.update(metric_type="hamming")), "metric_type 'hamming' is not supported"),
    ("unknown index type", _edit_yaml(lambda i: i.update(index_type="PQ")), "index_type 'PQ' is not one of"),
    ("id not an integer", _edit_yaml(lambda i: i["id_map"].update({"x": "ann"})), "id_map key 'x' is not an integer id"),
    ("ntotal != ids", _edit_yaml(lambda i: i["id_map"].pop(39)), "vector.index holds 40 vectors but id_map.yaml lists 39 ids"),
    ("ids differ", _edit_yaml(lambda i: i["id_map"].update({99: i["id_map"].pop(39)})), "id 39 is in vector.index only"),
    ("truncated vector.index", lambda d: _truncate(d / "vector.index"), "vector.index: truncated or not a faiss index"),
    ("not faiss", lambda d: (d / "vector.index").write_bytes(b"JFIF" * 100), "vector.index: truncated or not a faiss index"),
    ("no id map in faiss", _replace_vector_index(_plain_flat), "holds a IndexFlatIP, not the faiss IndexIDMap2"),
    ("type disagrees", _replace_vector_index(_hnsw_idmap), "says index_type Flat but vector.index is HNSW32"),
    ("metric disagrees", _edit_yaml(lambda i: i.update(metric_type="L2")), "says metric_type L2 but vector.index uses IP"),
    ("dim disagrees", _edit_yaml(lambda i: i.update(feature_dim=512)), "says feature_dim 512 but vector.index holds 16-d"),
]


@pytest.mark.parametrize(("case", "damage", "message"), BAD_INDEXES, ids=[c[0] for c in BAD_INDEXES])
def test_load_refuses_a_bad_index_with_one_line(tmp_path: Path, case: str, damage, message: str) -> None:
    # given
    index_dir = make_library(tmp_path, 40)
    damage(index_dir)
    # when
    with pytest.raises(FeatureLibraryError, match=message) as info:
        FeatureLibrary.load(index_dir)
    # then
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected_dim": 128}, "index holds 16-d vectors, engine gives 128-d: rebuild with `streamd gallery build`"),
        (
            {"expected_fingerprint": "model-b"},
            "index made by model model-a, engine is model model-b: rebuild with `streamd gallery build`",
        ),
    ],
)
def test_load_refuses_an_index_of_another_model(tmp_path: Path, kwargs: dict, message: str) -> None:
    index_dir = make_library(tmp_path, 10)
    with pytest.raises(FeatureLibraryError, match=message):
        FeatureLibrary.load(index_dir, **kwargs)


def test_load_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FeatureLibraryError, match="nowhere: index directory not found"):
        FeatureLibrary.load(tmp_path / "nowhere")


def test_index_info_yaml_is_read_when_id_map_yaml_is_absent(tmp_path: Path) -> None:
    # given: the file name PaddleX's documentation uses
    index_dir = make_library(tmp_path, 10)
    (index_dir / "id_map.yaml").rename(index_dir / "index_info.yaml")
    # when
    lib = FeatureLibrary.load(index_dir)
    # then
    assert lib.ntotal == 10


def test_an_index_without_fingerprint_is_searched_with_a_warning(tmp_path: Path, caplog) -> None:
    # given: what PaddleX writes (no streamd keys)
    index_dir = make_library(tmp_path, 10)
    info = yaml.safe_load((index_dir / "id_map.yaml").read_text())
    (index_dir / "id_map.yaml").write_text(
        yaml.safe_dump({k: info[k] for k in ("id_map", "index_type", "metric_type")})
    )
    # when
    with caplog.at_level(logging.WARNING):
        lib = FeatureLibrary.load(index_dir, expected_dim=DIM, expected_fingerprint="model-a")
    # then
    assert lib.fingerprint == "" and lib.created_at is None
    assert "has no model fingerprint" in caplog.text

"""IndexReloader with real faiss libraries, real files and a real watchfiles watch.

A reader thread stands in for the stream: it searches ``holder.get()`` continuously, as the
recognition loop does once per sample, and records every error and every generation it sees.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from streamd.errors import FeatureLibraryError
from streamd.index.holder import IndexHolder
from streamd.index.library import ID_MAP_FILE, VECTOR_FILE, FeatureLibrary
from streamd.index.notify import LabelChange, announce_index_state, index_state_message, on_label_change
from streamd.index.reload import IndexReloader, ReloadOutcome
from streamd.metrics import Metrics

DIM = 16
FINGERPRINT = "test-model-v1"
SCHEMA = Path(__file__).resolve().parent.parent / "streamd" / "schemas" / "index_state.json"
_rng = np.random.default_rng(7)
PROBE = _rng.standard_normal(DIM).astype(np.float32)
PROBE /= np.linalg.norm(PROBE)


def library(marker: str, *, others: int = 3, dim: int = DIM, fingerprint: str = FINGERPRINT) -> FeatureLibrary:
    """A library in which PROBE is found as ``marker``, plus ``others`` random vectors of other labels."""
    lib = FeatureLibrary.create(dim, fingerprint=fingerprint)
    rng = np.random.default_rng(abs(hash(marker)) % 2**32)
    rest = rng.standard_normal((others, dim)).astype(np.float32)
    rest /= np.linalg.norm(rest, axis=1, keepdims=True)
    probe = PROBE if dim == DIM else np.resize(PROBE, dim) / np.linalg.norm(np.resize(PROBE, dim))
    lib.add(np.vstack([probe[None, :], rest]), [marker] + [f"other-{i}" for i in range(others)])
    return lib


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Reader(threading.Thread):
    """Searches the holder's library for PROBE in a loop; records errors and (generation, label) changes."""

    def __init__(self, holder: IndexHolder) -> None:
        super().__init__(daemon=True)
        self.holder = holder
        self.stop_event = threading.Event()
        self.searches = 0
        self.errors: list[BaseException] = []
        self.seen: list[tuple[int, str]] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            state = self.holder.state
            if state.library is None:
                time.sleep(0.001)
                continue
            try:
                hits = state.library.search(PROBE, 1)  # type: ignore[attr-defined]
                label = hits[0][0].label
            except BaseException as exc:  # noqa: BLE001 - every failure is a lost sample
                self.errors.append(exc)
                continue
            self.searches += 1
            if not self.seen or self.seen[-1][0] != state.generation:
                self.seen.append((state.generation, label))

    def labels(self) -> list[str]:
        return [label for _, label in self.seen]

    def __enter__(self) -> Reader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join(5)


@pytest.fixture()
def index_dir(tmp_path: Path) -> Path:
    target = tmp_path / "lib" / "index"
    library("gen-0").save(target)
    return target


def make_reloader(index_dir: Path, holder: IndexHolder, metrics: Metrics, *, debounce_s: float, **kwargs) -> IndexReloader:
    return IndexReloader(
        index_dir, holder, expected_dim=DIM, expected_fingerprint=FINGERPRINT, metrics=metrics,
        debounce_s=debounce_s, **kwargs,
    )


def reloads(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("streamd_index_reloads_total", {"result": result}) or 0.0


# ---------------------------------------------------------------------- replacing under a running reader


def test_fifty_atomic_replacements_each_seen_by_a_continuous_reader(index_dir: Path) -> None:
    # given: a serving index and a reader searching it continuously
    metrics, holder = Metrics(), IndexHolder(Metrics())
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.05)
    assert reloader.start().result == "ok"
    try:
        with Reader(holder) as reader:
            wait_until(lambda: reader.labels() == ["gen-0"], what="the reader to search generation 1")
            # when: the index is replaced 50 times; each write waits until the reader has searched the last one
            for k in range(1, 51):
                library(f"gen-{k}").save(index_dir)
                wait_until(lambda: reader.seen and reader.seen[-1][1] == f"gen-{k}", what=f"the reader to see gen-{k}")
        # then: no search failed, every write was seen once, in order, with its own generation number
        assert reader.errors == []
        assert reader.labels() == [f"gen-{k}" for k in range(51)]
        assert [g for g, _ in reader.seen] == list(range(1, 52))
        assert reader.searches > 51
        assert reloads(metrics, "ok") == 51 and reloads(metrics, "refused") == 0
    finally:
        assert reloader.stop()


def test_a_burst_of_writes_is_coalesced_and_the_last_one_serves(index_dir: Path) -> None:
    # given
    metrics, holder = Metrics(), IndexHolder()
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.3)
    reloader.start()
    try:
        with Reader(holder) as reader:
            # when: 50 atomic saves back to back, faster than the debounce
            for k in range(1, 51):
                library(f"gen-{k}").save(index_dir)
                time.sleep(0.002)
            wait_until(lambda: holder.state.library is not None and reader.seen[-1][1] == "gen-50", what="gen-50")
            time.sleep(1.0)  # nothing further may arrive
        # then: what is provable without timing: no errors; every swap served a written library, in write
        # order, ending with the last; at most one swap per write; one counted reload per swap
        assert reader.errors == []
        numbers = [int(label.split("-")[1]) for label in reader.labels()]
        assert numbers == sorted(set(numbers)) and numbers[-1] == 50
        assert holder.generation <= 51
        assert reloads(metrics, "ok") == holder.generation and reloads(metrics, "refused") == 0
    finally:
        reloader.stop()


def test_unrelated_changes_beside_the_index_load_nothing(index_dir: Path) -> None:
    # given
    metrics, holder = Metrics(), IndexHolder()
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.05)
    reloader.start()
    try:
        # when: files appear beside the index directory and its lock file is used
        for n in range(5):
            (index_dir.parent / f"snapshot-{n}.jpg").write_bytes(b"x" * 10)
        (index_dir.parent / ".index.lock").touch()
        time.sleep(0.5)
        # then
        assert reloader.check().result == "unchanged"
        assert holder.generation == 1 and reloads(metrics, "ok") == 1
    finally:
        reloader.stop()


# ---------------------------------------------------------------------- refusals


def _replace(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` in one step, so the reloader never sees a half-done damage."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(data)
    os.replace(temp, path)


def _truncate_vectors(index_dir: Path) -> None:
    data = (index_dir / VECTOR_FILE).read_bytes()
    _replace(index_dir / VECTOR_FILE, data[: len(data) // 2])


def _id_map_disagrees(index_dir: Path) -> None:
    text = (index_dir / ID_MAP_FILE).read_text(encoding="utf-8")
    _replace(index_dir / ID_MAP_FILE, text.replace("\n  3: ", "\n  33: ").encode("utf-8"))


def _another_dimension(index_dir: Path) -> None:
    library("gen-bad", dim=32).save(index_dir)


def _another_model(index_dir: Path) -> None:
    library("gen-bad", fingerprint="other-model-v9").save(index_dir)


def _not_yaml(index_dir: Path) -> None:
    _replace(index_dir / ID_MAP_FILE, b"index_type: [Flat\n")


def _vectors_deleted(index_dir: Path) -> None:
    (index_dir / VECTOR_FILE).unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate_vectors, "vector.index: truncated or not a faiss index; rebuild with `streamd gallery build`"),
        (_id_map_disagrees, "id 3 is in vector.index only: vector.index and id_map.yaml disagree"),
        (_another_dimension, "index holds 32-d vectors, engine gives 16-d: rebuild with `streamd gallery build`"),
        (_another_model, "index made by model other-model-v9, engine is model test-model-v1"),
        (_not_yaml, "id_map.yaml: invalid YAML at line 2"),
        (_vectors_deleted, "vector.index: file missing"),
    ],
    ids=["truncated", "id_map_disagrees", "dimension", "fingerprint", "yaml", "missing"],
)
def test_a_bad_index_is_refused_while_the_old_one_keeps_serving(
    index_dir: Path, damage: Callable[[Path], None], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    caplog.set_level(logging.ERROR, logger="streamd.index.reload")
    metrics, holder = Metrics(), IndexHolder()
    refusals: list[ReloadOutcome] = []
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.1, on_refused=refusals.append)
    reloader.start()
    try:
        with Reader(holder) as reader:
            # when
            damage(index_dir)
            wait_until(lambda: len(refusals) == 1, what="the refusal")
            time.sleep(0.5)  # the same bad files are not refused again
            # then: refused once, logged once in one line naming the file, counted; the old index serves
            assert len(refusals) == 1 and message in (refusals[0].error or "")
            assert refusals[0].generation == 1
            lines = [r.getMessage() for r in caplog.records if r.name == "streamd.index.reload"]
            assert len(lines) == 1 and "\n" not in lines[0]
            assert lines[0].startswith("index reload refused, still serving generation 1 (4 vectors): ")
            assert message in lines[0] and str(index_dir) in lines[0]
            assert reloads(metrics, "refused") == 1
            assert holder.generation == 1 and reader.labels() == ["gen-0"] and reader.errors == []

            # when: a valid index is written after the bad one
            library("gen-1").save(index_dir)
            wait_until(lambda: reader.seen[-1][1] == "gen-1", what="recovery")
        # then
        assert reloads(metrics, "ok") == 2 and reloads(metrics, "refused") == 1 and reader.errors == []
    finally:
        reloader.stop()


def test_no_index_at_start_is_refused_then_the_first_valid_one_is_loaded(tmp_path: Path) -> None:
    # given: an index directory that does not exist yet (its parent does)
    index_dir = tmp_path / "index"
    metrics, holder = Metrics(), IndexHolder()
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.05)
    # when
    first = reloader.start()
    try:
        # then
        assert first.result == "refused" and "index directory not found" in (first.error or "")
        assert holder.get() is None and reloads(metrics, "refused") == 1
        # when
        library("gen-1").save(index_dir)
        wait_until(lambda: holder.generation == 1, what="the first index")
        # then
        assert holder.get().search(PROBE, 1)[0][0].label == "gen-1"  # type: ignore[union-attr]
    finally:
        reloader.stop()


# ---------------------------------------------------------------------- non-atomic writers (PaddleX's own save)


def _write_in_place(index_dir: Path, source: Path, pause_s: float) -> float:
    """Replace the two files in place one after the other, as PaddleX's IndexData.save does; returns the pause."""
    shutil.copyfile(source / VECTOR_FILE, index_dir / VECTOR_FILE)
    started = time.monotonic()
    time.sleep(pause_s)
    shutil.copyfile(source / ID_MAP_FILE, index_dir / ID_MAP_FILE)
    return time.monotonic() - started


@pytest.mark.parametrize("pause_share", [0.5, 1.4], ids=["pause-within-debounce", "pause-longer-than-debounce"])
def test_a_two_file_in_place_write_is_loaded_once_after_both(
    tmp_path: Path, index_dir: Path, pause_share: float, caplog: pytest.LogCaptureFixture
) -> None:
    # given: a new library of another size (a mixed pair would not load), written elsewhere first
    caplog.set_level(logging.DEBUG, logger="streamd.index.reload")
    debounce = 0.4
    staged = tmp_path / "staged"
    library("gen-1", others=7).save(staged)
    metrics, holder = Metrics(), IndexHolder()
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=debounce)
    reloader.start()
    try:
        with Reader(holder) as reader:
            # when: vector.index, a pause, then id_map.yaml
            paused = _write_in_place(index_dir, staged, pause_share * debounce)
            wait_until(lambda: reader.seen[-1][1] == "gen-1", what="the new index")
            time.sleep(3 * debounce)
        # then: loaded once, after both files; never refused; the reader never failed
        if paused >= 1.9 * debounce:
            pytest.skip(f"the writer was descheduled ({paused:.2f} s pause): a refusal would be correct then")
        assert reader.labels() == ["gen-0", "gen-1"] and reader.errors == []
        assert holder.generation == 2
        assert reloads(metrics, "ok") == 2 and reloads(metrics, "refused") == 0
        retried = [r.getMessage() for r in caplog.records if "not loadable yet" in r.getMessage()]
        if pause_share > 1:  # the mixed pair was looked at between the two files, and retried, not refused
            assert retried and "vector.index holds 8 vectors but id_map.yaml lists 4 ids" in retried[0]
    finally:
        reloader.stop()


# ---------------------------------------------------------------------- what others are told


def test_index_state_message_on_start_swap_and_refusal(index_dir: Path) -> None:
    # given
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    published: list[dict] = []
    holder = IndexHolder()
    reloader = make_reloader(index_dir, holder, Metrics(), debounce_s=0.05)
    reloader.start()
    unsubscribe = announce_index_state(holder, lambda m: published.append(dict(m)), reloader=reloader)
    try:
        # when: a new index, then a bad one
        library("gen-1", others=5).save(index_dir)
        wait_until(lambda: len(published) == 2, what="the swap message")
        _truncate_vectors(index_dir)
        wait_until(lambda: len(published) == 3, what="the refusal message")
    finally:
        reloader.stop()
        unsubscribe()
    # then: every message is valid as the publisher sends it (it adds updated_at)
    for message in published:
        validator.validate({"updated_at": time.time(), **message})
    start, swapped, refused = published
    assert (start["generation"], start["vectors"], start["labels"]) == (1, 4, 4)
    assert (swapped["generation"], swapped["vectors"], swapped["labels"]) == (2, 6, 6)
    assert swapped["fingerprint"] == swapped["model"] == FINGERPRINT and swapped["dir"] == str(index_dir)
    assert swapped["last_reload"]["result"] == "ok" and swapped["loaded_at"] == pytest.approx(time.time(), abs=30)
    assert refused["generation"] == 2 and refused["last_reload"]["result"] == "refused"
    assert "vector.index: truncated or not a faiss index" in refused["last_reload"]["error"]


def test_state_message_before_any_index() -> None:
    # when
    message = index_state_message(IndexHolder().state)
    # then
    assert message == {
        "generation": 0, "vectors": 0, "labels": 0, "loaded_at": None, "fingerprint": None, "model": None,
        "source": "", "last_reload": None,
    }


def test_label_change_listener_reports_who_entered_and_who_left() -> None:
    # given
    holder = IndexHolder()
    changes: list[LabelChange] = []
    on_label_change(holder, changes.append)
    first, second = FeatureLibrary.create(DIM), FeatureLibrary.create(DIM)
    vectors = np.eye(DIM, dtype=np.float32)[:3]
    first.add(vectors, ["ann", "bob", "bob"])
    second.add(vectors, ["ann", "cy", "cy"])
    # when
    holder.swap(first, "a")
    holder.swap(first.copy(), "b")  # same labels: no call
    holder.swap(second, "c")
    # then
    assert changes == [
        LabelChange(1, frozenset({"ann", "bob"}), frozenset({"ann", "bob"}), frozenset()),
        LabelChange(3, frozenset({"ann", "cy"}), frozenset({"cy"}), frozenset({"bob"})),
    ]


def test_stop_ends_the_watch_thread_promptly(index_dir: Path) -> None:
    # given
    reloader = make_reloader(index_dir, IndexHolder(), Metrics(), debounce_s=0.05)
    reloader.start()
    # when
    started = time.monotonic()
    stopped = reloader.stop(timeout=5)
    # then
    assert stopped and time.monotonic() - started < 5
    assert not any(t.name.startswith("index-reload:") for t in threading.enumerate())


def test_activate_saves_and_serves_a_library_once(index_dir: Path) -> None:
    # given: the HTTP API's index activation going through the running reloader
    metrics, holder = Metrics(), IndexHolder()
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.05)
    reloader.start()
    try:
        # when
        state = reloader.activate(library("gen-1"), source="api:key-1")
        time.sleep(0.5)  # the watch sees the save, and must not load it a second time
        # then
        assert (state.generation, state.source, holder.generation) == (2, "api:key-1", 2)
        assert FeatureLibrary.load(index_dir).search(PROBE, 1)[0][0].label == "gen-1"
        assert reloads(metrics, "ok") == 2

        # when: a library of another model is activated
        with pytest.raises(FeatureLibraryError, match="index made by model other-model-v9, engine is model test-model-v1"):
            reloader.activate(library("gen-2", fingerprint="other-model-v9"), source="api:key-2")
        time.sleep(0.5)
        # then: refused once and counted, not saved; the previous library keeps serving
        assert reloads(metrics, "refused") == 1 and holder.generation == 2
        assert holder.get().search(PROBE, 1)[0][0].label == "gen-1"  # type: ignore[union-attr]
        assert FeatureLibrary.load(index_dir).fingerprint == FINGERPRINT
    finally:
        reloader.stop()


def test_a_bad_file_dated_in_the_future_is_still_refused(index_dir: Path) -> None:
    # given: a damaged vector.index whose time is an hour ahead (a network share with a skewed clock)
    metrics, holder = Metrics(), IndexHolder()
    refusals: list[ReloadOutcome] = []
    reloader = make_reloader(index_dir, holder, metrics, debounce_s=0.05, on_refused=refusals.append)
    reloader.start()
    try:
        # when
        _truncate_vectors(index_dir)
        ahead = time.time() + 3600
        os.utime(index_dir / VECTOR_FILE, (ahead, ahead))
        # then: refused after a few looks rather than retried for ever
        wait_until(lambda: len(refusals) == 1, what="the refusal")
        assert "vector.index: truncated or not a faiss index" in (refusals[0].error or "")
        assert holder.generation == 1 and reloads(metrics, "refused") == 1
    finally:
        reloader.stop()


"""IndexHolder: lock-free reads, serialised swaps, metrics and listeners (with real faiss libraries)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamd.index.holder import IndexHolder, IndexState
from streamd.index.library import FeatureLibrary
from streamd.metrics import Metrics


def _library(labels: list[str], dim: int = 8) -> FeatureLibrary:
    lib = FeatureLibrary.create(dim, fingerprint="test-model")
    if labels:
        rng = np.random.default_rng(len(labels))
        vectors = rng.normal(size=(len(labels), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        lib.add(vectors, labels)
    return lib


def test_empty_holder_has_no_library_and_generation_zero():
    # given
    holder = IndexHolder()

    # then
    assert holder.get() is None
    assert holder.generation == 0
    assert holder.loaded_at is None
    assert holder.state.to_dict() == {
        "generation": 0, "vectors": 0, "labels": 0, "loaded_at": None, "source": "", "fingerprint": None,
    }


def test_swap_installs_library_bumps_generation_and_updates_metrics():
    # given
    metrics = Metrics()
    holder = IndexHolder(metrics)
    first, second = _library(["ann", "ann", "bob"]), _library(["ann", "bob", "cy", "dee"])

    # when
    holder.swap(first, "/var/lib/streamd/index")
    state = holder.swap(second, "api:key-1")

    # then
    assert holder.get() is second
    assert state.generation == 2 == holder.generation
    assert state.source == "api:key-1"
    value = metrics.registry.get_sample_value
    assert value("streamd_index_vectors") == 4
    assert value("streamd_index_labels") == 4
    assert value("streamd_index_generation") == 2
    assert value("streamd_index_loaded_timestamp_seconds") == pytest.approx(state.loaded_at)
    assert state.to_dict()["fingerprint"] == "test-model"


def test_listeners_see_each_generation_in_order_and_can_unsubscribe():
    # given
    holder = IndexHolder()
    seen: list[int] = []
    unsubscribe = holder.add_listener(lambda state: seen.append(state.generation))

    # when
    holder.swap(_library(["a"]), "one")
    holder.swap(_library(["a", "b"]), "two")
    unsubscribe()
    holder.swap(_library(["a", "b", "c"]), "three")

    # then
    assert seen == [1, 2]


def test_a_failing_listener_neither_stops_the_swap_nor_other_listeners(caplog):
    # given
    holder = IndexHolder()
    seen: list[IndexState] = []

    def broken(state: IndexState) -> None:
        raise RuntimeError("listener bug")

    holder.add_listener(broken)
    holder.add_listener(seen.append)

    # when
    holder.swap(_library(["a"]), "disk")

    # then
    assert holder.generation == 1
    assert [s.generation for s in seen] == [1]
    assert "listener" in caplog.text and "failed on generation 1" in caplog.text


def test_swap_refuses_none():
    # given
    holder = IndexHolder()

    # when
    with pytest.raises(ValueError) as err:
        holder.swap(None, "nothing")  # type: ignore[arg-type]

    # then
    assert str(err.value) == "IndexHolder.swap needs a library, got None"


def test_readers_never_see_a_library_of_another_generation_while_swaps_run():
    # given: generation g holds a library of g vectors, so a reader can check they belong together
    holder = IndexHolder()
    libraries = [_library([f"p{i}" for i in range(g)], dim=4) for g in range(1, 101)]
    stop = threading.Event()
    problems: list[str] = []
    seen_by_reader: list[list[int]] = [[] for _ in range(3)]

    def reader(slot: int) -> None:
        while not stop.is_set():
            state = holder.state
            if state.library is not None and state.library.ntotal != state.generation:
                problems.append(f"generation {state.generation} with {state.library.ntotal} vectors")
            seen_by_reader[slot].append(state.generation)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()

    # when
    for lib in libraries:
        holder.swap(lib, "writer")
    stop.set()
    for t in threads:
        t.join(5)

    # then
    assert problems == []
    assert holder.generation == 100
    for seen in seen_by_reader:
        assert seen == sorted(seen), "a reader saw the generation go backwards"

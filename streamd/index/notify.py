"""What others are told when the serving index changes: the retained state message and label changes.

* ``index_state_message`` builds the JSON of the retained ``<prefix>/index/state`` MQTT message
  (streamd/schemas/index_state.json) from the holder's state; ``announce_index_state`` publishes
  it now, after every swap and after every refused reload.
* ``on_label_change`` tells a subscriber (the per-camera trackers) which labels entered or left
  the index with each swap, so that evidence for a person no longer enrolled can be dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamd.index.holder import IndexHolder, IndexState

if TYPE_CHECKING:
    from streamd.index.reload import IndexReloader, ReloadOutcome


def index_state_message(
    state: IndexState,
    *,
    index_dir: Path | str | None = None,
    refusal: ReloadOutcome | None = None,
) -> dict[str, Any]:
    """The retained index state: {generation, vectors, labels, loaded_at, fingerprint, ...}.

    ``fingerprint`` (and ``model``, the schema's name for it) is the embedding model the serving
    index was built with; ``last_reload`` is the refusal when given, else the swap that made
    this generation. The publisher adds ``updated_at``.
    """
    fingerprint = None if state.library is None else (state.library.fingerprint or None)
    if refusal is not None:
        last_reload: dict[str, Any] | None = refusal.to_dict()
    elif state.library is not None:
        last_reload = {"result": "ok", "at": state.loaded_at, "error": None}
    else:
        last_reload = None
    message: dict[str, Any] = {
        "generation": state.generation,
        "vectors": state.vectors,
        "labels": state.label_count,
        "loaded_at": state.loaded_at,
        "fingerprint": fingerprint,
        "model": fingerprint,
        "source": state.source,
        "last_reload": last_reload,
    }
    if index_dir is not None:
        message["dir"] = str(index_dir)
    return message


def announce_index_state(
    holder: IndexHolder,
    publish: Callable[[Mapping[str, Any]], None],
    *,
    reloader: IndexReloader | None = None,
    index_dir: Path | str | None = None,
) -> Callable[[], None]:
    """Publish the index state now, after every swap and after every refusal; returns an unsubscribe.

    ``publish`` is e.g. ``MqttPublisher.publish_index_state`` (it must not block: it is called
    from the thread that swaps). With a ``reloader``, its refusals are published (the serving
    generation with ``last_reload.result = refused``).
    """
    where = index_dir if index_dir is not None else (reloader.index_dir if reloader is not None else None)
    last = reloader.last_outcome if reloader is not None else None
    refused_now = last if last is not None and last.result == "refused" else None
    publish(index_state_message(holder.state, index_dir=where, refusal=refused_now))
    unsubscribe = [holder.add_listener(lambda state: publish(index_state_message(state, index_dir=where)))]
    if reloader is not None:

        def on_outcome(outcome: ReloadOutcome) -> None:
            if outcome.result == "refused":
                publish(index_state_message(holder.state, index_dir=where, refusal=outcome))

        unsubscribe.append(reloader.add_listener(on_outcome))

    def remove() -> None:
        for fn in unsubscribe:
            fn()

    return remove


@dataclass(frozen=True)
class LabelChange:
    """The labels of one swap: all labels now, those that entered and those that left the index."""

    generation: int
    labels: frozenset[str]
    added: frozenset[str]
    removed: frozenset[str]


def labels_of(state: IndexState) -> frozenset[str]:
    """The distinct labels of a state's library (empty before the first swap)."""
    if state.library is None:
        return frozenset()
    cached = getattr(state.library, "label_set", None)  # FeatureLibrary computes it once, in slices
    return cached if cached is not None else frozenset(state.library.labels.values())


def on_label_change(holder: IndexHolder, callback: Callable[[LabelChange], None]) -> Callable[[], None]:
    """Call ``callback(change)`` after every swap whose label set differs from the one before.

    The first call compares with the labels serving when this was registered. It runs in the
    swapping thread (the reloader's), after the new index is serving: a tracker should hand the
    removed labels to its own thread (e.g. a set read at its next sample) rather than lock.
    Returns a function that unsubscribes.
    """
    lock = threading.Lock()
    previous = [labels_of(holder.state)]

    def listener(state: IndexState) -> None:
        now = labels_of(state)
        with lock:
            before, previous[0] = previous[0], now
        # The reloader hands an unchanged label set over as the same object: no comparison of
        # (at a million vectors) 200k labels, which would hold the GIL for a millisecond or two.
        if now is not before and now != before:
            callback(LabelChange(state.generation, now, now - before, before - now))

    return holder.add_listener(listener)

"""The serving index: the one FeatureLibrary every camera searches, behind a lock-free read.

Readers (the recognition loop, the HTTP API) call ``get()`` on every sample: it reads one
attribute, with no lock, so a reload never stalls the frame path. Writers (hot reload, the
API's index activation) build a whole new library off the frame path and ``swap()`` it in; the
swap replaces one immutable ``IndexState`` under a lock, so a reader sees the old generation or
the new one, never a mix. A library is never mutated after it is swapped in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from streamd.metrics import Metrics

if TYPE_CHECKING:
    from streamd.index.library import FeatureLibrary

log = logging.getLogger(__name__)


class ServingLibrary(Protocol):
    """What the holder needs of a library (``streamd.index.library.FeatureLibrary`` has it)."""

    @property
    def ntotal(self) -> int: ...

    @property
    def labels(self) -> Mapping[int, str]: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class IndexState:
    """One generation of the serving index.

    ``generation`` counts swaps from 0 (no index yet); ``loaded_at`` is the Unix time of the
    swap; ``source`` says where the library came from (a directory, ``api:<indexKey>``, ...).
    """

    library: ServingLibrary | None
    generation: int
    loaded_at: float | None
    source: str

    @property
    def vectors(self) -> int:
        return 0 if self.library is None else int(self.library.ntotal)

    @property
    def label_count(self) -> int:
        if self.library is None:
            return 0
        # FeatureLibrary counts its distinct labels without decoding them: the swap (and its log
        # line and metrics) must not spend GIL time on a million labels while cameras search.
        counted = getattr(self.library, "distinct_labels", None)
        if counted is not None:
            return int(counted)
        return len(set(self.library.labels.values()))

    def to_dict(self) -> dict:
        """JSON for /api/index and the retained ``<prefix>/index/state`` MQTT message."""
        return {
            "generation": self.generation,
            "vectors": self.vectors,
            "labels": self.label_count,
            "loaded_at": self.loaded_at,
            "source": self.source,
            "fingerprint": None if self.library is None else self.library.fingerprint,
        }


#: Called after every swap with the new state (from the swapping thread, in generation order).
IndexListener = Callable[[IndexState], None]


class IndexHolder:
    """Holds the current IndexState; ``get()`` is lock-free, ``swap()`` is serialised."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._state = IndexState(library=None, generation=0, loaded_at=None, source="")
        self._swap_lock = threading.RLock()  # re-entrant: a listener may itself swap
        self._listeners: list[IndexListener] = []

    def get(self) -> FeatureLibrary | None:
        """The current library, or None before the first swap. Never blocks."""
        return self._state.library

    @property
    def state(self) -> IndexState:
        """The current generation with its metadata (one consistent snapshot)."""
        return self._state

    @property
    def generation(self) -> int:
        return self._state.generation

    @property
    def loaded_at(self) -> float | None:
        return self._state.loaded_at

    def swap(self, new: FeatureLibrary | ServingLibrary, source: str) -> IndexState:
        """Install ``new`` as the serving library; returns the new state.

        The caller hands ``new`` over: it must not change it afterwards (build a new one instead).
        Metrics are updated and listeners called before this returns.
        """
        if new is None:
            raise ValueError("IndexHolder.swap needs a library, got None")
        with self._swap_lock:
            state = IndexState(
                library=new,
                generation=self._state.generation + 1,
                loaded_at=time.time(),
                source=source,
            )
            self._state = state  # one reference assignment: atomic for readers
            self._update_metrics(state)
            log.info(
                "index: generation %d from %s: %d vectors, %d labels",
                state.generation, source, state.vectors, state.label_count,
            )
            for listener in list(self._listeners):
                try:
                    listener(state)
                except Exception:  # one broken listener must not stop the others or the swap
                    log.exception("index: listener %r failed on generation %d", listener, state.generation)
        return state

    def add_listener(self, listener: IndexListener) -> Callable[[], None]:
        """Call ``listener(state)`` after every swap; returns a function that unsubscribes it."""
        with self._swap_lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._swap_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _update_metrics(self, state: IndexState) -> None:
        m = self._metrics
        if m is None:
            return
        m.index_vectors.set(state.vectors)
        m.index_labels.set(state.label_count)
        m.index_generation.set(state.generation)
        m.index_loaded_timestamp.set(state.loaded_at or 0)

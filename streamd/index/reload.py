"""Hot reload of the serving index: watch the index directory, load off the frame path, swap.

``IndexReloader`` watches an index directory (``vector.index`` + ``id_map.yaml``) and, when it
changes, loads the new library in its own thread, validates it and swaps it into the
``IndexHolder`` that every camera reads once per sample. Recognition never waits for a load.

What counts as a change. The reloader compares a signature of the directory (its inode and,
per file, inode, size and modification time) with the signature of what it loaded last; an
event that leaves the signature as it was (a ``touch`` of the parent, a lock file) loads nothing.
Events come from watching the *parent* of the index directory (an atomic save exchanges the whole
directory, so a watch on the directory itself would follow the old one into the bin) and the
directory itself (PaddleX's own ``IndexData.save`` rewrites the two files in place).

Debounce. A load starts only once no event has arrived for ``debounce_s``: a writer that
replaces ``vector.index`` and then ``id_map.yaml`` (PaddleX does, non-atomically) is loaded once,
after both. If the load still fails (a slow writer paused longer than the debounce), or the files
changed while they were read, the reloader looks again after another ``debounce_s``; it refuses
only files that failed the same way twice and were last written at least ``debounce_s`` ago.
Atomic saves (``streamd gallery``, the gallery watcher, ``FeatureLibrary.save``) are never seen
half-written. A non-atomic writer that leaves a *consistent* mixed pair for longer than the
debounce (same ids in both files, e.g. only labels changed) cannot be told from a real index:
such writers should save atomically (write elsewhere, then rename the directory).

Validation is ``FeatureLibrary.load``'s: both files present and readable, not truncated, the
same ids in both, index and metric types as declared, and the engine's feature dimension and
model fingerprint. A refused index leaves the old one serving; the refusal is logged (one line
naming the file and the problem), counted (``streamd_index_reloads_total{result="refused"}``)
and reported to listeners (the daemon publishes it on ``<prefix>/index/state``). The same
refused files are not reported again; the next change to them is loaded as usual.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamd.errors import FeatureLibraryError
from streamd.index.holder import IndexHolder, IndexState
from streamd.index.library import (
    ID_MAP_FILE,
    INDEX_INFO_FILE,
    VECTOR_FILE,
    FeatureLibrary,
    library_lock,
)
from streamd.index.library import _check_expected as check_expected
from streamd.index.watch import DebouncedWatch
from streamd.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = 1.0
DEFAULT_RECHECK_S = 30.0
#: Nice increment of the reload thread: on a busy box, loading a large index competes for CPU
#: with the frame path; at a lower priority it takes the CPU time the cameras leave over.
RELOAD_NICE = 10
#: Looks after which files that keep failing the same way are refused even if they seem to have
#: been written a moment ago (a file time in the future, e.g. a network share's skewed clock).
MAX_LOOKS = 5

ReloadResult = Literal["ok", "refused", "unchanged", "retry"]


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file without reading it."""

    name: str
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class IndexSignature:
    """The index directory's inode plus a stamp per library file (missing files are left out)."""

    directory: tuple[int, int]
    files: tuple[FileStamp, ...]


def read_signature(index_dir: Path) -> IndexSignature | None:
    """The current signature of ``index_dir``; None when the directory does not exist."""
    try:
        dir_fd = os.open(index_dir, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(dir_fd)
        stamps = []
        for name in (VECTOR_FILE, ID_MAP_FILE, INDEX_INFO_FILE):
            try:
                f = os.stat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            stamps.append(FileStamp(name, f.st_ino, f.st_size, f.st_mtime_ns, f.st_ctime_ns))
        return IndexSignature((st.st_dev, st.st_ino), tuple(stamps))
    finally:
        os.close(dir_fd)


def _age_s(signature: IndexSignature | None) -> float:
    """Seconds since the newest change to the library files (inf when there are none)."""
    if signature is None or not signature.files:
        return float("inf")
    newest = max(max(f.mtime_ns, f.ctime_ns) for f in signature.files)
    return (time.time_ns() - newest) / 1e9


@dataclass(frozen=True)
class ReloadOutcome:
    """What one look at the index directory did.

    ``result``: ``ok`` (loaded and swapped in as ``generation``), ``refused`` (invalid; the
    serving ``generation`` is unchanged; ``error`` says why, naming the file), ``unchanged``
    (nothing new on disk) or ``retry`` (failed or changed while being read: looked at again
    after the debounce before being refused). ``at`` is the Unix time of the outcome.
    """

    result: ReloadResult
    index_dir: Path
    generation: int
    at: float
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The ``last_reload`` object of the retained index state message."""
        return {"result": self.result, "at": self.at, "error": self.error}


ReloadListener = Callable[[ReloadOutcome], None]


class IndexReloader:
    """Keeps ``holder`` serving the newest valid library found in ``index_dir``.

    ``start()`` loads the index once (synchronously, so the caller knows whether an index is
    serving) and then watches for changes in a thread until ``stop()``. ``check()`` looks at
    the directory now, from any thread (loads are serialised).

    ``on_loaded(state)`` is called after every swap this reloader makes, ``on_refused(outcome)``
    after every refusal (both from the reloader's thread, or the caller's for ``start``/``check``).
    Swaps made by others through the holder are not undone; the next change on disk wins.
    """

    def __init__(
        self,
        index_dir: Path | str,
        holder: IndexHolder,
        *,
        expected_dim: int | None,
        expected_fingerprint: str | None,
        metrics: Metrics | None = None,
        on_refused: ReloadListener | None = None,
        on_loaded: Callable[[IndexState], None] | None = None,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        recheck_s: float | None = DEFAULT_RECHECK_S,
        force_polling: bool | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.holder = holder
        self.expected_dim = expected_dim
        self.expected_fingerprint = expected_fingerprint
        self.debounce_s = float(debounce_s)
        self._metrics = metrics
        self._on_refused = on_refused
        self._on_loaded = on_loaded
        self._listeners: list[ReloadListener] = []
        self._lock = threading.Lock()
        self._served: IndexSignature | None | object = _NOTHING  # signature of what we loaded last
        self._refused: IndexSignature | None | object = _NOTHING  # signature we refused last
        self._suspect: tuple[IndexSignature | None, str, int] | None = None  # (files, error, looks): look again
        self._last: ReloadOutcome | None = None
        self._watch = DebouncedWatch(
            f"index-reload:{self.index_dir.name}",
            self._watch_paths,
            self._on_settled,
            debounce_s=self.debounce_s,
            recheck_s=recheck_s,
            recursive=False,
            relevant=self._relevant,
            identity=self._dir_identity,
            force_polling=force_polling,
            first_call_s=None,  # start() has loaded already
            nice=RELOAD_NICE,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, settle_tries: int = 3) -> ReloadOutcome:
        """Load the index now (retrying a few debounce periods if it is being written), then watch.

        Returns the outcome of the first load: ``ok``, ``refused`` (e.g. no index yet: the
        holder stays empty and the watch picks up the first valid index written later) or
        ``unchanged`` (the holder already serves these files).
        """
        outcome = self.check()
        for _ in range(settle_tries):
            if outcome.result != "retry":
                break
            time.sleep(self.debounce_s)
            outcome = self.check()
        if outcome.result == "retry":  # still unsettled: the watch decides after the debounce
            self._watch._due = time.monotonic() + self.debounce_s
        self._watch.start()
        return outcome

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop watching; a load in progress finishes first. False if the thread did not end in time."""
        return self._watch.stop(timeout)

    def __enter__(self) -> IndexReloader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_listener(self, listener: ReloadListener) -> Callable[[], None]:
        """Call ``listener(outcome)`` after every ``ok`` and ``refused`` outcome; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @property
    def last_outcome(self) -> ReloadOutcome | None:
        """The last ``ok`` or ``refused`` outcome (None before the first)."""
        return self._last

    # ------------------------------------------------------------------ the check

    def check(self) -> ReloadOutcome:
        """Look at the index directory now: load, validate and swap when it holds a new library."""
        with self._lock:
            return self._check()

    def activate(self, library: FeatureLibrary, source: str | None = None) -> IndexState:
        """Save ``library`` into the index directory and serve it now (the HTTP API's index activation).

        Saved atomically under ``library_lock``, then loaded back and swapped in through this
        reloader, so the watch does not load the same files a second time. Raises
        FeatureLibraryError (and counts a refusal) when the engine cannot use it.
        """
        with self._lock:
            try:  # refuse before saving: a library the engine cannot use must not replace the files
                check_expected(library, self.index_dir, self.expected_dim, self.expected_fingerprint)
            except FeatureLibraryError as exc:
                self._refuse(read_signature(self.index_dir), str(exc), 0.0, remember=False)
                raise
            with library_lock(self.index_dir):
                library.save(self.index_dir)
            outcome = self._check(source=source, settle=False)
        if outcome.result == "refused":
            raise FeatureLibraryError(outcome.error or f"{self.index_dir}: refused")
        return self.holder.state

    def _check(self, *, source: str | None = None, settle: bool = True) -> ReloadOutcome:
        before = read_signature(self.index_dir)
        if before == self._served or before == self._refused:
            return self._outcome("unchanged")
        started = time.perf_counter()
        try:
            library = FeatureLibrary.load(
                self.index_dir, expected_dim=self.expected_dim, expected_fingerprint=self.expected_fingerprint
            )
        except FeatureLibraryError as exc:
            return self._failed(before, str(exc), time.perf_counter() - started, settle=settle)
        after = read_signature(self.index_dir)
        if after != before:
            # Rewritten in place while we read it: what we hold may pair old and new files.
            self._suspect = None
            log.debug("index: %s changed while loading; loading again after %.2f s", self.index_dir, self.debounce_s)
            return self._outcome("retry", seconds=time.perf_counter() - started)
        previous = self.holder.get()
        share = getattr(library, "share_label_set", None)
        if share is not None:
            share(previous)  # same people as before: label-change listeners compare one set with itself
        state = self.holder.swap(library, source=source or str(self.index_dir))
        del library
        self._served, self._refused, self._suspect = before, _NOTHING, None
        outcome = self._outcome("ok", generation=state.generation, seconds=time.perf_counter() - started)
        self._count("ok")
        self._notify(outcome)
        if self._on_loaded is not None:
            self._call(self._on_loaded, state)
        _release(previous)
        return outcome

    def _failed(self, before: IndexSignature | None, error: str, seconds: float, *, settle: bool = True) -> ReloadOutcome:
        after = read_signature(self.index_dir)
        looks = self._suspect[2] + 1 if self._suspect is not None and self._suspect[:2] == (before, error) else 1
        # Refuse only files that failed the same way twice and have been left alone for a debounce
        # period (or failed MAX_LOOKS times: a clock skewed into the future must not stall us);
        # anything else may be a writer between its two files or still writing: look again.
        quiet = _age_s(after) >= self.debounce_s
        if settle and (after != before or looks < 2 or (not quiet and looks < MAX_LOOKS)):
            self._suspect = (after, error, looks) if after == before else None
            log.debug("index: %s not loadable yet (%s); looking again after %.2f s", self.index_dir, error, self.debounce_s)
            return self._outcome("retry", error=error, seconds=seconds)
        return self._refuse(before, error, seconds)

    def _refuse(self, before: IndexSignature | None, error: str, seconds: float, *, remember: bool = True) -> ReloadOutcome:
        if remember:
            self._refused, self._suspect = before, None
        serving = self.holder.state
        still = (
            f"still serving generation {serving.generation} ({serving.vectors} vectors)"
            if serving.library is not None
            else "no index is serving"
        )
        log.error("index reload refused, %s: %s", still, error)
        outcome = self._outcome("refused", error=error, seconds=seconds)
        self._count("refused")
        self._notify(outcome)
        if self._on_refused is not None:
            self._call(self._on_refused, outcome)
        return outcome

    def _outcome(self, result: ReloadResult, *, error: str | None = None, generation: int | None = None,
                 seconds: float = 0.0) -> ReloadOutcome:
        gen = self.holder.generation if generation is None else generation
        outcome = ReloadOutcome(result, self.index_dir, gen, time.time(), error, seconds)
        if result in ("ok", "refused"):
            self._last = outcome
        return outcome

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.index_reloads.labels(result=result).inc()

    def _notify(self, outcome: ReloadOutcome) -> None:
        for listener in list(self._listeners):
            self._call(listener, outcome)

    @staticmethod
    def _call(fn: Callable, arg: object) -> None:
        try:
            fn(arg)
        except Exception:  # a broken listener must not stop reloads
            log.exception("index: reload listener %r failed", fn)

    # ------------------------------------------------------------------ watching

    def _on_settled(self) -> float | None:
        outcome = self.check()
        return self.debounce_s if outcome.result == "retry" else None

    def _real_dir(self) -> Path:
        # A symlinked index directory is saved by exchanging its target: watch where that happens.
        return Path(os.path.realpath(self.index_dir))

    def _watch_paths(self) -> list[Path]:
        # The parent sees the directory being exchanged; the directory sees in-place rewrites.
        real = self._real_dir()
        return [real.parent, real]

    def _dir_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.index_dir)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _relevant(self, path: str) -> bool:
        p, real = Path(path), self._real_dir()
        if p.parent == real.parent:
            # The directory itself, or a save's temporary directory beside it; not other neighbours.
            return p.name == real.name or p.name.startswith(f".{real.name}.tmp-")
        # A file inside the directory (reported under its old name after a swap, too).
        return p.parent == real or p.parent.name == real.name or p.parent.name.startswith(f".{real.name}.tmp-")


def _release(library: object, timeout_s: float = 2.0) -> None:
    """Drop the previous library in this thread once no reader holds it any more.

    Freeing a library takes milliseconds (its labels are a few numpy arrays, and faiss frees its
    index without the GIL); if a camera thread that was still searching it dropped the last
    reference, that thread would pay them. Readers hold a library for one batch (milliseconds),
    so this waits briefly, then frees it here.
    """
    if library is None:
        return
    deadline = time.monotonic() + timeout_s
    # 3 references: the caller's variable, ours, and getrefcount's argument.
    while sys.getrefcount(library) > 3 and time.monotonic() < deadline:
        time.sleep(0.005)


_NOTHING = object()  # "never loaded / never refused": unequal to every signature, None included

"""Keep a feature library in step with a gallery data_root while the daemon runs.

``GalleryWatcher`` watches ``data_root`` (``images/<ID>/*.jpg`` or ``gallery.txt``, the layouts
``streamd gallery build`` reads). When images are added, replaced or removed it changes the index
*incrementally*: only new or changed images are embedded, the vectors of removed images are
removed, and the library is saved atomically under ``library_lock`` (so it never undoes a
`streamd gallery ...` run that saves at the same time). The index reloader then swaps it in.

Which image made which vector is recorded in the index's own ``id_map.yaml``, under the extra
key ``gallery_images`` (PaddleX ignores extra keys), so it survives restarts and always matches
the vectors it describes (both are saved together)::

    gallery_images:
      images/Ana Lopez/1.jpg: {id: 7, label: Ana Lopez, size: 48213, mtime_ns: 1700000000000000000}
      images/Bob/blurry.jpg: {id: null, label: Bob, size: 9120, mtime_ns: ..., skipped: rejected:blurry}

An image is "changed" when its size, modification time or label differs from the record; it is
then removed and embedded again. Images that gave no vector (no face, unreadable, rejected by the
quality gate) are recorded with ``id: null`` and not tried again until the file changes. Vectors
that others removed (``streamd gallery remove``) are marked the same way, so the watcher does not
put them back while the image is unchanged. Vectors added by others (``streamd gallery append``,
the HTTP API) are not in the record and are left alone.

Special cases:

* An index with vectors but no record (built by ``streamd gallery build`` or PaddleX) is rebuilt
  once from data_root, keeping its index and metric type: only then is every vector's image known.
* HNSW32 cannot remove vectors (as in PaddleX): a removal rebuilds the graph from the remaining
  vectors (read back from the index, not re-embedded), which takes minutes at a million vectors.
* A data_root that is missing, or holds no image at all while the record lists enrolled images
  (an unmounted share), changes nothing: the watcher logs it and waits, it never empties the index.
* An index of another model, or one PaddleX built without a fingerprint, is not changed: the
  watcher logs it once per state; rebuild it with ``streamd gallery build``.
* A record id reused by someone else for the same label cannot be told apart from the original.

Embedding runs in the watcher's thread at a lower CPU priority (nice +10); give the watcher its
own ``FaceEngine`` unless the one the cameras use is safe to call from a second thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamd.errors import FeatureLibraryError
from streamd.images import DEFAULT_MAX_PIXELS
from streamd.index.builder import GalleryEngine, ImageReport, MultipleFaces, enrol_item, load_for_engine
from streamd.index.gallery import GalleryItem, read_gallery
from streamd.index.library import FeatureLibrary, IndexType, MetricType, library_lock
from streamd.index.reload import IndexSignature, read_signature
from streamd.index.watch import DebouncedWatch

log = logging.getLogger(__name__)

RECORD_KEY = "gallery_images"
SKIP_REMOVED = "removed_from_index"
DEFAULT_DEBOUNCE_S = 2.0
DEFAULT_RECHECK_S = 60.0


@dataclass(frozen=True)
class Stamp:
    """Size and modification time of a gallery image: a different stamp means a different image."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class GallerySync:
    """What one pass changed. Paths are relative to data_root (``images/Ana/1.jpg``)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[ImageReport, ...] = ()
    rebuilt: bool = False
    saved: bool = False
    vectors: int = 0
    pending: int = 0  # changes seen under the lock that this pass had not embedded: next pass


@dataclass
class _Scan:
    items: dict[str, tuple[GalleryItem, Stamp]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


class GalleryWatcher:
    """Watches ``data_root`` and applies its changes to the library in ``index_dir``.

    ``sync()`` makes one pass now (from any thread; passes are serialised); ``start()`` runs a
    first pass and then one after every settled change (and every ``recheck_s``) in a thread.
    ``on_synced(sync)`` is called after every pass that saved the index.
    """

    def __init__(
        self,
        data_root: Path | str,
        index_dir: Path | str,
        engine: GalleryEngine,
        *,
        index_type: IndexType = "Flat",
        metric_type: MetricType = "IP",
        multiple_faces: MultipleFaces = "largest",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        recheck_s: float | None = DEFAULT_RECHECK_S,
        on_synced: Callable[[GallerySync], None] | None = None,
        force_polling: bool | None = None,
    ) -> None:
        self.data_root = Path(data_root)
        self.index_dir = Path(index_dir)
        self.engine = engine
        self.index_type = index_type
        self.metric_type = metric_type
        self.multiple_faces = multiple_faces
        self.max_pixels = max_pixels
        self._on_synced = on_synced
        self._lock = threading.Lock()
        self._cached: tuple[IndexSignature | None, FeatureLibrary | None] | None = None
        self._logged: set[str] = set()  # problems already logged, so a recheck does not repeat them
        self._watch = DebouncedWatch(
            f"gallery-watch:{self.data_root.name}",
            lambda: [self.data_root],
            self._on_settled,
            debounce_s=debounce_s,
            recheck_s=recheck_s,
            recursive=True,
            relevant=self._relevant,
            force_polling=force_polling,
            first_call_s=0.0,
            nice=10,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start watching; the first pass runs at once in the watcher's thread."""
        self._watch.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop watching; a pass in progress (embedding) finishes first. False if not stopped in time."""
        return self._watch.stop(timeout)

    def __enter__(self) -> GalleryWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_settled(self) -> float | None:
        result = self.sync()
        # Images that changed while this pass embedded others: another pass right away.
        return 0.0 if result is not None and result.pending else None

    def _relevant(self, path: str) -> bool:
        try:
            rel = Path(path).relative_to(self.data_root)
        except ValueError:
            return True
        name = rel.name
        # Hidden files are never gallery images; editors and copy tools write temp files like these.
        return not any(part.startswith(".") for part in rel.parts) and not name.endswith(("~", ".tmp", ".part"))

    # ------------------------------------------------------------------ one pass

    def sync(self) -> GallerySync | None:
        """Apply the gallery's changes to the index now; None when nothing could be done (logged)."""
        with self._lock:
            try:
                return self._sync()
            except FeatureLibraryError as exc:
                self._log_once(logging.ERROR, f"gallery watch: index not changed: {exc}")
                return None

    def _sync(self) -> GallerySync | None:
        scan = self._scan()
        if scan is None:
            return None
        lib = self._library()
        record, adopt = _record_of(lib)
        to_add, to_remove = _plan(scan, record, adopt)
        if not to_add and not to_remove:
            return GallerySync(vectors=0 if lib is None else lib.ntotal)
        if not scan.items and any(e.get("id") is not None for e in record.values()):
            self._log_once(
                logging.WARNING,
                f"gallery watch: {self.data_root} holds no gallery image but the index has "
                f"{sum(1 for e in record.values() if e.get('id') is not None)} from it; not emptying the index "
                "(unmounted? remove the index or rebuild it to clear it)",
            )
            return None
        if adopt:
            log.warning(
                "gallery watch: %s has no record of which gallery image made which vector; rebuilding it once "
                "from %s (%d images)", self.index_dir, self.data_root, len(to_add),
            )
        embedded = self._embed([scan.items[rel][0] for rel in to_add])
        with library_lock(self.index_dir):
            return self._apply(scan, embedded)

    def _apply(self, scan: _Scan, embedded: dict[str, tuple[ImageReport, np.ndarray | None]]) -> GallerySync:
        # Under the lock: start again from what is on disk now (another writer may have saved).
        self._cached = None
        lib = self._library()
        record, adopt = _record_of(lib)
        to_add, to_remove = _plan(scan, record, adopt)
        pending = [rel for rel in to_add if rel not in embedded]
        to_add = [rel for rel in to_add if rel in embedded]
        if lib is None or adopt:
            existing = lib
            lib = FeatureLibrary.create(
                self.engine.dim,
                index_type=existing.index_type if existing is not None else self.index_type,
                metric_type=existing.metric_type if existing is not None else self.metric_type,
                fingerprint=self.engine.fingerprint,
            )
            record, to_remove = {}, []
        record = dict(record)
        remove_ids = [int(record[rel]["id"]) for rel in to_remove if record[rel].get("id") is not None]
        for rel in to_remove:
            del record[rel]
        if remove_ids:
            if lib.index_type == "HNSW32":
                log.info("gallery watch: HNSW32 cannot remove; rebuilding its graph without %d vectors", len(remove_ids))
                lib = lib.rebuilt_without(remove_ids)
            else:
                lib.remove(remove_ids)
        add_rels = [rel for rel in to_add if embedded[rel][1] is not None]
        if add_rels:
            vectors = np.stack([embedded[rel][1] for rel in add_rels])  # type: ignore[misc]
            ids = lib.add(vectors, [scan.items[rel][0].label for rel in add_rels])
        else:
            ids = []
        id_of = dict(zip(add_rels, ids))
        skipped = []
        for rel in to_add:
            item, stamp = scan.items[rel]
            report = embedded[rel][0]
            entry: dict[str, Any] = {"id": id_of.get(rel), "label": item.label, "size": stamp.size, "mtime_ns": stamp.mtime_ns}
            if rel not in id_of:
                entry["skipped"] = report.reason or "not_enrolled"
                skipped.append(report)
            record[rel] = entry
        lib.set_extra(RECORD_KEY, dict(sorted(record.items())))
        lib.save(self.index_dir)
        self._cached = (read_signature(self.index_dir), lib)
        removed = tuple(to_remove)
        log.info(
            "gallery watch: %s saved: %d images added, %d removed, %d skipped; %d vectors, %d labels",
            self.index_dir, len(add_rels), len(removed), len(skipped), lib.ntotal, len(set(lib.labels.values())),
        )
        result = GallerySync(
            added=tuple(add_rels), removed=removed, skipped=tuple(skipped), rebuilt=adopt, saved=True,
            vectors=lib.ntotal, pending=len(pending),
        )
        if self._on_synced is not None:
            try:
                self._on_synced(result)
            except Exception:
                log.exception("gallery watch: on_synced callback failed")
        return result

    # ------------------------------------------------------------------ pieces

    def _scan(self) -> _Scan | None:
        try:
            gallery = read_gallery(self.data_root)
        except FeatureLibraryError as exc:
            if not self.data_root.is_dir():
                self._log_once(logging.ERROR, f"gallery watch: {exc}; waiting for it")
                return None
            return _Scan()  # a data_root without any image
        for problem in gallery.problems:
            self._log_once(logging.WARNING, f"gallery watch: {self.data_root}: skipped {problem}")
        items: dict[str, tuple[GalleryItem, Stamp]] = {}
        for item in gallery.items:
            try:
                st = os.stat(item.path)
            except OSError:
                continue  # removed since it was listed: the next pass sees it gone
            items[_relative(item.path, self.data_root)] = (item, Stamp(st.st_size, st.st_mtime_ns))
        return _Scan(items, gallery.problems)

    def _library(self) -> FeatureLibrary | None:
        """The library on disk (cached while its files are unchanged); None when there is none yet."""
        sig = read_signature(self.index_dir)
        if self._cached is not None and self._cached[0] == sig and sig is not None:
            return self._cached[1]
        if sig is None or not sig.files:
            self._cached = None
            return None
        lib = load_for_engine(self.index_dir, self.engine)
        self._cached = (sig, lib)
        return lib

    def _embed(self, items: list[GalleryItem]) -> dict[str, tuple[ImageReport, np.ndarray | None]]:
        out = {}
        for item in items:
            if self._watch.stopping:
                break  # stopping: what was not embedded is picked up after the next start
            report, vector = enrol_item(self.engine, item, multiple_faces=self.multiple_faces, max_pixels=self.max_pixels)
            log.info("gallery watch: %s", report.line())
            out[_relative(item.path, self.data_root)] = (report, vector)
        return out

    def _log_once(self, level: int, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.log(level, message)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()  # an absolute path listed in gallery.txt


def _record_of(lib: FeatureLibrary | None) -> tuple[dict[str, dict[str, Any]], bool]:
    """The library's record of gallery images (entries whose vector is gone marked so), and whether
    the library must be adopted (rebuilt) because it has vectors but no record."""
    if lib is None:
        return {}, False
    raw = lib.extra.get(RECORD_KEY)
    if not isinstance(raw, Mapping):
        return {}, lib.ntotal > 0
    labels = lib.labels
    record: dict[str, dict[str, Any]] = {}
    for rel, entry in raw.items():
        if not isinstance(entry, Mapping):
            continue
        entry = dict(entry)
        vid = entry.get("id")
        if vid is not None and labels.get(int(vid)) != entry.get("label"):
            # Removed by someone else (or its id reused for another label): do not put it back.
            entry["id"], entry["skipped"] = None, SKIP_REMOVED
        record[str(rel)] = entry
    return record, False


def _plan(scan: _Scan, record: Mapping[str, Mapping[str, Any]], adopt: bool) -> tuple[list[str], list[str]]:
    """(images to embed, record entries to remove): new or changed images, and gone or changed ones."""
    if adopt:
        return sorted(scan.items), []

    def changed(entry: Mapping[str, Any], item: GalleryItem, stamp: Stamp) -> bool:
        return (entry.get("label"), entry.get("size"), entry.get("mtime_ns")) != (item.label, stamp.size, stamp.mtime_ns)

    to_add = [rel for rel, (item, stamp) in sorted(scan.items.items()) if rel not in record or changed(record[rel], item, stamp)]
    to_remove = [rel for rel, entry in record.items() if rel not in scan.items or changed(entry, *scan.items[rel])]
    return to_add, to_remove

"""The feature library: face vectors and their labels, on disk exactly as PaddleX writes it.

Layout of an index directory (PaddleX ``IndexData.save``)::

    vector.index   a faiss IndexIDMap2 around Flat, IVF<nlist>,Flat or HNSW32
    id_map.yaml    {index_type: Flat|IVF|HNSW32, metric_type: IP|L2, id_map: {id: label}}

PaddleX's docs call the YAML file ``index_info.yaml``; it is read when ``id_map.yaml`` is absent.
streamd adds ``feature_dim``, ``model_fingerprint``, ``created_at`` and ``updated_at`` keys to the
YAML; PaddleX ignores them, and streamd uses them to refuse an index made by another model
(PaddleX does not check, so its users get silently wrong names: PaddleX issue 2689). Any other
top-level YAML key is kept as it is through load, change and save (``FeatureLibrary.extra``): the
daemon's gallery watcher records there which image made which vector, and a `streamd gallery
append` run in between must not erase that record.

Ids are assigned as PaddleX does: a batch gets consecutive ids starting at ``max(id) + 1`` (0 for
an empty library). Removing the highest ids therefore lets later additions reuse them, as in PaddleX.

Scores (``Match.score``) are always "higher is more similar":

* ``IP``: the inner product, i.e. the cosine similarity for the unit vectors the engines produce.
* ``L2``: faiss returns the *squared* L2 distance d²; streamd reports ``1 - d²/2``, which equals
  the cosine similarity for unit vectors. So one ``rec_threshold`` means the same for both metrics.
  PaddleX instead reports the raw d² and still treats "score < rec_threshold" as unknown, which
  inverts the threshold for L2 indexes; streamd deliberately does not copy that.

Index types:

* ``Flat``: exact search, supports remove. The default.
* ``IVF``: trained on the first batch added to an empty library with ``nlist = min(4*sqrt(n), n/39)``
  lists (faiss wants >= 39 training points per list; PaddleX uses n/8, which fails below 8
  vectors). With fewer than 78 vectors this falls back to one list, which is exact search; the lists
  are not re-trained by later additions, so rebuild when the gallery has grown many times over.
  ``nprobe`` (stored in the file) is ``max(8, nlist/8)``. Supports remove.
* ``HNSW32``: graph search, fastest on large galleries, ``efSearch`` 128 (stored in the file).
  Does not support remove (as in PaddleX): rebuild instead.

Saving is atomic: the two files are written and fsynced in a temporary directory beside the index
directory, which is then exchanged with the index directory in one ``renameat2(RENAME_EXCHANGE)``
call (Linux), the parent directory fsynced and the old generation deleted. The index directory
stays a plain directory holding the two files, so PaddleX (and cp, tar, backups) use it as before.
A reader opens the directory once and reads both files relative to that handle, so it sees one
generation or the other, never a mix of the two, even if a save happens between its two reads.

Loading holds the GIL only briefly at a time, so that the daemon can reload a large index in one
thread while its cameras search the old one in others: the id map is parsed by a helper process
for all but small files (streamd/index/info_reader.py) and kept in numpy arrays
(streamd/index/labels.py), faiss reads ``vector.index`` by path, and the ids of the two files
are compared with numpy.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import errno
import fcntl
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

from streamd.errors import FeatureLibraryError
from streamd.index.info_reader import IndexInfo, read_index_info
from streamd.index.infofile import OWN_KEYS, dump_index_info
from streamd.index.labels import LabelTable
from streamd.types import Match

log = logging.getLogger(__name__)

IndexType = Literal["Flat", "IVF", "HNSW32"]
MetricType = Literal["IP", "L2"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
METRIC_TYPES: tuple[str, ...] = get_args(MetricType)

VECTOR_FILE = "vector.index"
ID_MAP_FILE = "id_map.yaml"
#: The name PaddleX's documentation gives the YAML file; read when id_map.yaml is absent.
INDEX_INFO_FILE = "index_info.yaml"
LIBRARY_FILES = frozenset({VECTOR_FILE, ID_MAP_FILE, INDEX_INFO_FILE})

HNSW_EF_SEARCH = 128  # recall@1 ~0.98 on 100k random 128-d vectors at ~0.4 ms per query
HNSW_M = 32
IVF_MIN_POINTS_PER_LIST = 39  # below this faiss warns that k-means has too little data
IVF_MAX_LISTS = 65536  # PaddleX's cap

_REBUILD_HINT = "rebuild with `streamd gallery build`"
#: YAML keys the library itself reads and writes; any other top-level key is an ``extra``.
_OWN_KEYS = OWN_KEYS


class FeatureLibrary:
    """Face vectors with labels in a faiss IndexIDMap2, saved in PaddleX's layout.

    Not thread-safe for mutation: a reader that needs a new generation loads a new object and
    swaps the reference (searching one object from several threads is safe).

    The labels are a ``LabelTable`` (numpy arrays, see streamd/index/labels.py): loading,
    checking and freeing a million of them holds the GIL for well under a millisecond at a time,
    so a reload in another thread does not stall the frame path. Changes replace the table.
    """

    def __init__(
        self,
        index: Any,
        labels: Mapping[int, str],
        *,
        index_type: IndexType,
        metric_type: MetricType,
        fingerprint: str = "",
        created_at: str | None = None,
        ivf_nlist: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._index = index
        self._extra: dict[str, Any] | None = copy.deepcopy(dict(extra or {}))
        self._extra_source: IndexInfo | None = None  # a loaded file's extra keys, parsed when first used
        self._fixed_nlist = ivf_nlist
        self._labels = LabelTable.from_mapping(labels)
        self._index_type = index_type
        self._metric_type = metric_type
        self._fingerprint = fingerprint
        self._created_at = created_at

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        dim: int,
        *,
        index_type: IndexType = "Flat",
        metric_type: MetricType = "IP",
        fingerprint: str = "",
        ivf_nlist: int | None = None,
    ) -> FeatureLibrary:
        """An empty library for ``dim``-dimensional vectors made by the model ``fingerprint``.

        ``ivf_nlist`` fixes the number of IVF lists instead of choosing it from the first batch.
        """
        if index_type not in INDEX_TYPES:
            raise FeatureLibraryError(f"index type {index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        if metric_type not in METRIC_TYPES:
            raise FeatureLibraryError(f"metric type {metric_type!r} is not one of {', '.join(METRIC_TYPES)}")
        if int(dim) < 1:
            raise FeatureLibraryError(f"feature dimension must be at least 1, got {dim}")
        if ivf_nlist is not None and ivf_nlist < 1:
            raise FeatureLibraryError(f"ivf_nlist must be at least 1, got {ivf_nlist}")
        return cls(
            _new_index(int(dim), index_type, metric_type, nlist=ivf_nlist or 1),
            {},
            index_type=index_type,
            metric_type=metric_type,
            fingerprint=fingerprint,
            created_at=_now(),
            ivf_nlist=ivf_nlist,
        )

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def index_type(self) -> IndexType:
        return self._index_type  # type: ignore[return-value]

    @property
    def metric_type(self) -> MetricType:
        return self._metric_type  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """The model fingerprint the vectors were made with ("" for indexes PaddleX built)."""
        return self._fingerprint

    @property
    def created_at(self) -> str | None:
        """ISO 8601 UTC time the library was first built (None for indexes PaddleX built)."""
        return self._created_at

    @property
    def labels(self) -> Mapping[int, str]:
        """Read-only id -> label mapping (a LabelTable)."""
        return self._labels

    @property
    def ivf_nlist(self) -> int | None:
        """Number of IVF lists, None for other index types."""
        if self._index_type != "IVF":
            return None
        import faiss

        return int(faiss.extract_index_ivf(self._index).nlist)

    @property
    def extra(self) -> Mapping[str, Any]:
        """Other top-level keys of the YAML file, kept through load and save (read-only view)."""
        return MappingProxyType(self._extras())

    def _extras(self) -> dict[str, Any]:
        # A loaded file's extra keys are unpickled on first use: the daemon's reload never needs them.
        if self._extra is None:
            self._extra = self._extra_source.extra if self._extra_source is not None else {}
            self._extra_source = None
        return self._extra

    def set_extra(self, key: str, value: Any) -> None:
        """Store ``value`` (plain YAML data) under the top-level YAML key ``key``; None deletes it."""
        if key in _OWN_KEYS:
            raise FeatureLibraryError(f"{key!r} is a key the library writes itself; choose another name")
        if value is None:
            self._extras().pop(key, None)
        else:
            self._extras()[key] = value

    @property
    def label_set(self) -> frozenset[str]:
        """The distinct labels (decoded once, in slices that let other threads run between them)."""
        return self._labels.label_set

    def share_label_set(self, other: object) -> bool:
        """Reuse ``other``'s decoded label set when both libraries hold the same labels.

        The reloader calls it with the library it replaces: a reload that enrolled no new
        person then decodes no label, and the two generations' label sets are one object.
        """
        labels = getattr(other, "_labels", None)
        return isinstance(labels, LabelTable) and self._labels.share_names(labels)

    @property
    def distinct_labels(self) -> int:
        """How many distinct labels the library holds (without decoding them)."""
        return self._labels.distinct

    def label_counts(self) -> Counter[str]:
        """Number of vectors per label."""
        return Counter(self._labels.counts())

    def ids_for_label(self, label: str) -> list[int]:
        """Ids of the vectors enrolled under ``label``, ascending."""
        return self._labels.ids_for(label).tolist()

    def copy(self) -> FeatureLibrary:
        """An independent deep copy (change it while this one keeps serving searches)."""
        import faiss

        return FeatureLibrary(
            faiss.clone_index(self._index),
            self._labels,
            index_type=self.index_type,
            metric_type=self.metric_type,
            fingerprint=self._fingerprint,
            created_at=self._created_at,
            ivf_nlist=self._fixed_nlist,
            extra=self._extras(),
        )

    def rebuilt_without(self, ids: Iterable[int]) -> FeatureLibrary:
        """A new library holding every vector but ``ids``, under the same ids; this one is unchanged.

        The remaining vectors are read back from the index (no re-embedding) and added to an empty
        index of the same kind (IVF keeps its trained lists). This is how an HNSW32 library
        "removes" (faiss cannot delete from the graph), at the cost of a full graph build (minutes
        at a million vectors), and how IVF removes correctly (see ``remove``).
        """
        drop = np.fromiter({int(i) for i in ids}, dtype=np.int64)
        all_ids, vectors = _stored_vectors(self._index, self._index_type)
        keep = ~np.isin(all_ids, drop)
        new = self.copy()
        new._index.reset()  # an IndexIDMap2 reset empties the id map and the inner index (IVF stays trained)
        if keep.any():
            new._index.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(all_ids[keep]))
        new._labels = self._labels.without(drop)
        return new

    # ------------------------------------------------------------------ changes

    def add(self, vectors: np.ndarray, labels: Sequence[str]) -> list[int]:
        """Add one vector per label; returns their new ids (consecutive from max id + 1, as PaddleX)."""
        x = self._as_queries(vectors, what="vectors to add")
        labels = list(labels)
        if len(labels) != len(x):
            raise FeatureLibraryError(f"{len(x)} vectors but {len(labels)} labels: give one label per vector")
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise FeatureLibraryError(f"label {label!r} is not a non-empty string")
        if len(x) == 0:
            return []
        if self._index_type == "IVF" and self.ntotal == 0:
            # IVF learns its lists from data: (re)train on the first batch of an empty library.
            nlist = self._fixed_nlist or choose_ivf_nlist(len(x))
            if nlist > len(x):
                raise FeatureLibraryError(f"IVF with {nlist} lists needs at least {nlist} vectors to train, got {len(x)}")
            self._index = _new_index(self.dim, "IVF", self._metric_type, nlist=nlist)
            self._index.train(x)
            _set_search_params(self._index, "IVF")
        highest = self._labels.max_id()
        start = highest + 1 if highest is not None else 0
        ids = np.arange(start, start + len(x), dtype=np.int64)
        self._index.add_with_ids(x, ids)
        self._labels = self._labels.with_added(ids, labels)
        return ids.tolist()

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the vectors with these ids; ids not in the library are ignored. Returns how many went."""
        if self._index_type == "HNSW32":
            raise FeatureLibraryError(
                "HNSW32 indexes do not support remove (as in PaddleX): rebuild the index without those "
                "images, or build it with --index-type Flat or IVF"
            )
        wanted = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
        present = wanted[self._labels.contains(wanted)]
        if not len(present):
            return 0
        if self._index_type == "IVF":
            # IndexIDMap2.remove_ids compacts its id map as if the inner index renumbered its
            # vectors, which IVF does not: removing ids from an IVF IDMap2 attaches later vectors
            # to the wrong ids (wrong names). Rebuild the lists without them instead.
            before = self.ntotal
            rebuilt = self.rebuilt_without(present)
            self._index = rebuilt._index
            removed = before - self.ntotal
        else:
            removed = int(self._index.remove_ids(present))
        self._labels = self._labels.without(present)
        if removed != len(present):  # would mean the two halves had diverged: never save that
            raise FeatureLibraryError(f"faiss removed {removed} vectors but {len(present)} ids were asked for")
        return removed

    # ------------------------------------------------------------------ search

    def search(self, vectors: np.ndarray, topk: int) -> list[list[Match]]:
        """The ``topk`` most similar gallery vectors for each query, best first.

        ``Match.score`` is a similarity (higher is better) for both metrics; see the module doc.
        """
        x = self._as_queries(vectors, what="query vectors")
        if topk < 1:
            raise FeatureLibraryError(f"topk must be at least 1, got {topk}")
        if self.ntotal == 0 or len(x) == 0:
            return [[] for _ in range(len(x))]
        k = min(int(topk), self.ntotal)
        distances, ids = self._index.search(x, k)
        if self._metric_type == "L2":
            distances = 1.0 - distances / 2.0
        out: list[list[Match]] = []
        for row_scores, row_ids in zip(distances, ids):
            found = row_ids >= 0
            labels = self._labels.lookup(row_ids[found])
            out.append(
                [
                    Match(id=int(i), label=label, score=float(s))
                    for s, i, label in zip(row_scores[found].tolist(), row_ids[found].tolist(), labels)
                ]
            )
        return out

    def _as_queries(self, vectors: np.ndarray, *, what: str) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.size == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise FeatureLibraryError(f"{what} have shape {tuple(np.shape(vectors))}, the library holds {self.dim}-d vectors")
        if not np.isfinite(x).all():
            raise FeatureLibraryError(f"{what} contain NaN or infinite values")
        return np.ascontiguousarray(x)

    # ------------------------------------------------------------------ disk

    def index_info(self) -> dict[str, Any]:
        """The YAML document: PaddleX's three keys first, streamd's extra keys, then the id map."""
        header, id_map = self._info_parts()
        return {**header, "id_map": dict(id_map.items())}

    def _info_parts(self) -> tuple[dict[str, Any], Mapping[int, str]]:
        header = {
            "index_type": self._index_type,
            "metric_type": self._metric_type,
            "feature_dim": self.dim,
            "model_fingerprint": self._fingerprint,
            "created_at": self._created_at or _now(),
            "updated_at": _now(),
            **self._extras(),
        }
        return header, self._labels  # a LabelTable iterates in id order

    def save(self, index_dir: Path | str) -> Path:
        """Write the library to ``index_dir`` atomically (see the module doc); returns the directory."""
        return save_atomically(self, Path(index_dir))

    @classmethod
    def load(
        cls,
        index_dir: Path | str,
        *,
        expected_dim: int | None = None,
        expected_fingerprint: str | None = None,
    ) -> FeatureLibrary:
        """Load and validate a library; every problem is a one-line FeatureLibraryError.

        An index without a fingerprint (built by PaddleX) cannot be checked against
        ``expected_fingerprint``: it is accepted with a warning, its dimension still checked.
        """
        return load_library(Path(index_dir), expected_dim=expected_dim, expected_fingerprint=expected_fingerprint)

    def __repr__(self) -> str:
        return (
            f"FeatureLibrary({self._index_type}/{self._metric_type}, dim={self.dim}, ntotal={self.ntotal}, "
            f"labels={self.distinct_labels}, fingerprint={self._fingerprint!r})"
        )


# ---------------------------------------------------------------------- faiss helpers


def choose_ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` training vectors: about 4*sqrt(n), with >= 39 points per list, at least 1."""
    return max(1, min(int(4 * math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST, IVF_MAX_LISTS))


def _faiss_metric(metric_type: str) -> int:
    import faiss

    return faiss.METRIC_INNER_PRODUCT if metric_type == "IP" else faiss.METRIC_L2


def _new_index(dim: int, index_type: str, metric_type: str, *, nlist: int = 1) -> Any:
    import faiss

    description = {"Flat": "Flat", "IVF": f"IVF{nlist},Flat", "HNSW32": f"HNSW{HNSW_M}"}[index_type]
    index = faiss.index_factory(dim, f"IDMap2,{description}", _faiss_metric(metric_type))
    _set_search_params(index, index_type)
    return index


def _set_search_params(index: Any, index_type: str) -> None:
    """Search parameters are stored in the file, so PaddleX searches with them too."""
    import faiss

    if index_type == "HNSW32":
        faiss.downcast_index(index.index).hnsw.efSearch = HNSW_EF_SEARCH
    elif index_type == "IVF":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(int(ivf.nlist), max(8, int(ivf.nlist) // 8))


def _stored_vectors(index: Any, index_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(external ids, vectors) of every vector an IndexIDMap2 holds, read back from its storage."""
    import faiss

    id_map = faiss.vector_to_array(index.id_map)
    inner = faiss.downcast_index(index.index)
    if index_type == "IVF":
        ivf = faiss.extract_index_ivf(index)
        internal, codes = [], []
        for lst in range(ivf.nlist):
            n = ivf.invlists.list_size(lst)
            if n:
                internal.append(faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy())
                codes.append(faiss.rev_swig_ptr(ivf.invlists.get_codes(lst), n * ivf.code_size).copy())
        if not internal:
            return id_map[:0], np.empty((0, index.d), dtype=np.float32)
        # IVF lists hold the sequence numbers the IDMap2 gave the vectors when they were added.
        vectors = np.concatenate(codes).view(np.float32).reshape(-1, index.d)
        return id_map[np.concatenate(internal)], vectors
    storage = faiss.downcast_index(inner.storage) if index_type == "HNSW32" else inner
    vectors = faiss.vector_to_array(storage.codes).view(np.float32).reshape(len(id_map), index.d)
    return id_map, vectors


def _inner_type(index: Any) -> str:
    """Flat, IVF or HNSW32 from the faiss class inside the IndexIDMap2 ('' when none fits)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        return "HNSW32"
    if isinstance(inner, faiss.IndexIVF):
        return "IVF"
    if isinstance(inner, faiss.IndexFlat):
        return "Flat"
    return ""


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------- atomic save

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when the OS or file system can't."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_replaceable(target: Path) -> None:
    """Refuse to replace a directory that holds anything besides a feature library."""
    target = Path(os.path.realpath(target))
    if not target.exists():
        return
    if not target.is_dir():
        raise FeatureLibraryError(f"{target}: exists and is not a directory; choose another index directory")
    if os.path.ismount(target):
        raise FeatureLibraryError(
            f"{target}: is a mount point, so it cannot be replaced atomically; mount its parent directory instead"
        )
    others = sorted(p.name for p in target.iterdir() if p.name not in LIBRARY_FILES)
    if others:
        raise FeatureLibraryError(
            f"{target}: holds other files (e.g. {others[0]}) besides a feature library; "
            "choose an empty or new index directory"
        )


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Delete temp directories left by saves that were killed (their process no longer exists)."""
    for stale in parent.glob(f".{name}.tmp-*"):
        try:
            pid = int(stale.name[len(name) + 6 :].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def save_atomically(lib: FeatureLibrary, index_dir: Path) -> Path:
    """Write ``lib`` into a temp dir beside ``index_dir``, fsync, and swap it into place."""
    import faiss

    # Resolve a user's symlink so that the directory it points to is replaced, not the link.
    target = Path(os.path.realpath(index_dir))
    check_replaceable(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise FeatureLibraryError(f"{target}: cannot create the index directory ({exc.strerror})") from None
    try:
        vector_path = tmp / VECTOR_FILE
        faiss.write_index(lib._index, str(vector_path))
        _fsync_path(vector_path)
        with open(tmp / ID_MAP_FILE, "w", encoding="utf-8") as f:
            f.write(dump_index_info(*lib._info_parts()))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; an index dir is normally readable by the daemon
        _fsync_path(tmp, directory=True)
        if not target.exists():
            os.rename(tmp, target)
        elif not _exchange(tmp, target):
            # No RENAME_EXCHANGE here: two renames, with a moment in which the directory is absent
            # (a reader then fails to open it and retries) but never holds a mixed pair.
            aside = tmp.with_name(tmp.name + "-old")
            os.rename(target, aside)
            os.rename(tmp, target)
            tmp = aside
        _fsync_path(parent, directory=True)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise FeatureLibraryError(f"{target}: cannot save the feature library ({reason}); nothing was replaced") from None
    shutil.rmtree(tmp, ignore_errors=True)  # the previous generation, swapped out
    return target


@contextlib.contextmanager
def library_lock(index_dir: Path | str) -> Iterator[None]:
    """Serialise read-modify-write of one library across processes (an flock beside the directory).

    Readers never need it: saves are atomic. Writers that load, change and save (gallery append,
    remove, the daemon's gallery watcher) take it so that one does not undo the other's change.
    """
    target = Path(os.path.realpath(index_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------- load


def _save_in_progress(index_dir: Path) -> bool:
    target = Path(os.path.realpath(index_dir))
    return any(target.parent.glob(f".{target.name}.tmp-*"))


def _swapped_out(index_dir: Path, dir_fd: int) -> bool:
    """True when ``dir_fd`` is no longer the directory at ``index_dir`` (a save replaced it)."""
    held = os.fstat(dir_fd)
    try:
        now = os.stat(index_dir)
    except FileNotFoundError:
        return True
    return (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino) or held.st_nlink == 0


class _Replaced(Exception):
    """The directory was swapped out while being read: read the new generation."""


def load_library(
    index_dir: Path,
    *,
    expected_dim: int | None = None,
    expected_fingerprint: str | None = None,
    attempts: int = 5,
) -> FeatureLibrary:
    """See FeatureLibrary.load."""
    for attempt in range(attempts):
        try:
            dir_fd = os.open(index_dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if attempt + 1 < attempts and _save_in_progress(index_dir):
                time.sleep(0.01 * (attempt + 1))  # the two-rename fallback's brief gap
                continue
            raise FeatureLibraryError(f"{index_dir}: index directory not found; {_REBUILD_HINT}") from None
        except NotADirectoryError:
            raise FeatureLibraryError(f"{index_dir}: is not a directory (expected vector.index + id_map.yaml inside)") from None
        except OSError as exc:
            raise FeatureLibraryError(f"{index_dir}: cannot open the index directory ({exc.strerror})") from None
        try:
            lib = _load_from_dir_fd(index_dir, dir_fd)
        except _Replaced:
            continue
        finally:
            os.close(dir_fd)
        _check_expected(lib, index_dir, expected_dim, expected_fingerprint)
        return lib
    raise FeatureLibraryError(f"{index_dir}: the index kept changing while being read ({attempts} tries)")


def _open_member(index_dir: Path, dir_fd: int, name: str) -> int | None:
    try:
        return os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        if _swapped_out(index_dir, dir_fd):
            raise _Replaced() from None
        return None
    except OSError as exc:
        raise FeatureLibraryError(f"{index_dir / name}: cannot read ({exc.strerror})") from None


def _load_from_dir_fd(index_dir: Path, dir_fd: int) -> FeatureLibrary:
    # Open both files first: once open, a concurrent save cannot change what we read.
    info_name = ID_MAP_FILE
    info_fd = _open_member(index_dir, dir_fd, ID_MAP_FILE)
    if info_fd is None:
        info_name = INDEX_INFO_FILE
        info_fd = _open_member(index_dir, dir_fd, INDEX_INFO_FILE)
    vector_fd = _open_member(index_dir, dir_fd, VECTOR_FILE)
    try:
        if info_fd is None:
            raise FeatureLibraryError(
                f"{index_dir / ID_MAP_FILE}: file missing (nor {INDEX_INFO_FILE}); a feature library needs "
                f"{VECTOR_FILE} and {ID_MAP_FILE}; {_REBUILD_HINT}"
            )
        if vector_fd is None:
            raise FeatureLibraryError(
                f"{index_dir / VECTOR_FILE}: file missing; a feature library needs {VECTOR_FILE} and "
                f"{ID_MAP_FILE}; {_REBUILD_HINT}"
            )
        info = read_index_info(index_dir / info_name, info_fd)
        index = _read_faiss(index_dir / VECTOR_FILE, vector_fd)
    finally:
        for fd in (info_fd, vector_fd):
            if fd is not None:
                os.close(fd)
    return _assemble(index_dir, info_name, info, index)


def _read_faiss(path: Path, fd: int) -> Any:
    """The faiss index in the file open at ``fd``.

    Read through ``/proc/self/fd/<fd>`` (the very file opened, even if a save has replaced or
    deleted it since): faiss then reads it in C++ without the GIL. A Python read callback would
    take the GIL for every chunk of a file of hundreds of MB and stall the frame path.
    """
    import faiss

    proc_path = f"/proc/self/fd/{fd}"
    try:
        if os.path.exists(proc_path):
            index = faiss.read_index(proc_path)
        else:  # no /proc: read through Python (holds the GIL between chunks)
            with os.fdopen(os.dup(fd), "rb") as f:
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except RuntimeError as exc:
        log.debug("faiss could not read %s: %s", path, exc)
        raise FeatureLibraryError(f"{path}: truncated or not a faiss index; {_REBUILD_HINT}") from None
    if not isinstance(index, faiss.IndexIDMap2):
        raise FeatureLibraryError(
            f"{path}: holds a {type(index).__name__}, not the faiss IndexIDMap2 of PaddleX's layout; {_REBUILD_HINT}"
        )
    return index


def _assemble(index_dir: Path, info_name: str, info: IndexInfo, index: Any) -> FeatureLibrary:
    import faiss

    header, labels = info.header, info.labels
    if index.ntotal != len(labels):
        raise FeatureLibraryError(
            f"{index_dir}: {VECTOR_FILE} holds {index.ntotal} vectors but {info_name} lists {len(labels)} ids: "
            f"the two files disagree; restore both together or {_REBUILD_HINT}"
        )
    ids = faiss.vector_to_array(index.id_map)
    stray = _stray_id(ids, labels.ids)
    if stray is not None:
        where = VECTOR_FILE if bool((ids == stray).any()) else info_name
        raise FeatureLibraryError(
            f"{index_dir}: id {stray} is in {where} only: {VECTOR_FILE} and {info_name} disagree; "
            f"restore both together or {_REBUILD_HINT}"
        )
    if index.metric_type != _faiss_metric(header["metric_type"]):
        actual = "IP" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "L2"
        raise FeatureLibraryError(
            f"{index_dir}: {info_name} says metric_type {header['metric_type']} but {VECTOR_FILE} uses {actual}"
        )
    inner = _inner_type(index)
    if inner != header["index_type"]:
        raise FeatureLibraryError(
            f"{index_dir}: {info_name} says index_type {header['index_type']} but {VECTOR_FILE} is "
            f"{inner or type(faiss.downcast_index(index.index)).__name__}"
        )
    declared_dim = header.get("feature_dim")
    if declared_dim is not None and int(declared_dim) != index.d:
        raise FeatureLibraryError(
            f"{index_dir}: {info_name} says feature_dim {declared_dim} but {VECTOR_FILE} holds {index.d}-d vectors"
        )
    created = header.get("created_at")
    lib = FeatureLibrary(
        index,
        labels,
        index_type=header["index_type"],
        metric_type=header["metric_type"],
        fingerprint=str(header.get("model_fingerprint") or ""),
        created_at=str(created) if created is not None else None,
    )
    lib._extra, lib._extra_source = None, info
    return lib


def _stray_id(ids: np.ndarray, table_ids: np.ndarray) -> int | None:
    """The smallest id in only one of the vector file's ``ids`` and the id map's sorted ``table_ids``
    (same length), None when they hold the same ids.

    numpy sorts and compares without holding the GIL (sets of a million ids would hold it for
    ~50 ms, a stall for the frame path while the daemon reloads).
    """
    ordered = np.sort(ids)
    if np.array_equal(ordered, table_ids):
        return None
    # Repeated ids in the vector file: then the id map (no repeats, same length) has one it lacks.
    only_here = np.setdiff1d(ordered, table_ids, assume_unique=False)
    only_there = np.setdiff1d(table_ids, ordered, assume_unique=False)
    return int(np.concatenate([only_here, only_there]).min())


def _check_expected(
    lib: FeatureLibrary, index_dir: Path, expected_dim: int | None, expected_fingerprint: str | None
) -> None:
    if expected_fingerprint and lib.fingerprint and lib.fingerprint != expected_fingerprint:
        raise FeatureLibraryError(
            f"{index_dir}: index made by model {lib.fingerprint}, engine is model {expected_fingerprint}: {_REBUILD_HINT}"
        )
    if expected_dim is not None and lib.dim != int(expected_dim):
        raise FeatureLibraryError(
            f"{index_dir}: index holds {lib.dim}-d vectors, engine gives {expected_dim}-d: {_REBUILD_HINT}"
        )
    if expected_fingerprint and not lib.fingerprint:
        log.warning(
            "%s: index has no model fingerprint (built by PaddleX?); cannot check it was made by %s",
            index_dir,
            expected_fingerprint,
        )

"""The id -> label table of a feature library, held in numpy arrays instead of a dict.

A dict of a million ``int -> str`` entries costs the interpreter about 100 MB and tens of ms of
GIL time to build, to check against the vector file and to free; while the daemon reloads its
index that GIL time stalls the frame path (on 2 cores each of its GIL re-acquisitions waits up to
the 5 ms switch interval). ``LabelTable`` keeps the same information in four arrays, which numpy
sorts, compares and frees without holding the GIL for long:

* ``ids``: the vector ids, int64, sorted ascending, no duplicates;
* ``codes``: int32, per id the number of its label among the distinct labels;
* the distinct labels, UTF-8 encoded one after another in one ``bytes`` blob, with an int64
  ``offsets`` array (label ``c`` is ``blob[offsets[c]:offsets[c + 1]]``). Every label is used
  by at least one id.

A label is decoded to ``str`` only when asked for (a search result names a handful). The whole
set of labels (``label_set``) is decoded once, in slices with a pause between them, so that a
thread computing it hands the GIL to others between slices. Lone surrogates (which YAML escapes
can produce) survive the UTF-8 round trip ("surrogatepass").

Tables are immutable: ``with_added`` and ``without`` return new tables (O(n), for the gallery
commands and the gallery watcher, not for the frame path).
"""

from __future__ import annotations

import time
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import Any

import numpy as np

_ENCODING = "utf-8"
_ERRORS = "surrogatepass"
#: Labels decoded per slice of ``names()``: a few hundred microseconds of GIL time.
_SLICE = 1024
#: Pause between slices: long enough for a thread waiting for the GIL to be woken and take it
#: (a zero sleep returns before the waiter runs, and the slicing thread takes the GIL again).
_YIELD_S = 0.0002


def yield_gil() -> None:
    """Let other Python threads run now (the caller holds no lock they need)."""
    time.sleep(_YIELD_S)


def encode_names(names: Iterable[str]) -> tuple[np.ndarray, bytes]:
    """(offsets, blob) of ``names``: label ``c`` is ``blob[offsets[c]:offsets[c + 1]]``."""
    encoded = [name.encode(_ENCODING, _ERRORS) for name in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return offsets, b"".join(encoded)


class LabelTable(Mapping[int, str]):
    """An immutable id -> label mapping in numpy arrays (see the module doc)."""

    __slots__ = ("_ids", "_codes", "_offsets", "_blob", "_names", "_label_set", "_code_of")

    def __init__(self, ids: np.ndarray, codes: np.ndarray, offsets: np.ndarray, blob: bytes) -> None:
        """Wrap arrays that already hold the invariants (``from_arrays`` checks them)."""
        self._ids = _frozen(ids)
        self._codes = _frozen(codes)
        self._offsets = _frozen(offsets)
        self._blob = bytes(blob)
        self._names: tuple[str, ...] | None = None
        self._label_set: frozenset[str] | None = None
        self._code_of: dict[str, int] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def empty(cls) -> LabelTable:
        return cls(np.empty(0, np.int64), np.empty(0, np.int32), np.zeros(1, np.int64), b"")

    @classmethod
    def from_mapping(cls, mapping: Mapping[int, str]) -> LabelTable:
        """A table holding ``mapping`` (a LabelTable is returned as it is: tables never change)."""
        if isinstance(mapping, LabelTable):
            return mapping
        return cls.from_pairs(mapping.keys(), mapping.values())

    @classmethod
    def from_pairs(cls, ids: Iterable[int], labels: Iterable[str]) -> LabelTable:
        """A table of ``zip(ids, labels)``; a repeated id keeps its last label, as in a dict."""
        pairs = dict(zip((int(i) for i in ids), (str(label) for label in labels)))
        code_of: dict[str, int] = {}
        codes = np.fromiter((code_of.setdefault(label, len(code_of)) for label in pairs.values()), np.int32, len(pairs))
        id_array = np.fromiter(pairs.keys(), np.int64, len(pairs))
        offsets, blob = encode_names(code_of)
        order = np.argsort(id_array, kind="stable")
        return cls(id_array[order], codes[order], offsets, blob)._compacted()

    @classmethod
    def from_arrays(
        cls, ids: np.ndarray, codes: np.ndarray, offsets: np.ndarray, blob: bytes, *, compact: bool = True
    ) -> LabelTable:
        """A table from raw arrays (e.g. received from another process), after checking them.

        Ids need not be sorted. Labels no id uses are dropped, unless ``compact`` is False (the
        caller knows there are none). Raises ValueError when the arrays cannot be a table
        (repeated ids, codes out of range, offsets not rising to len(blob)).
        """
        ids = np.asarray(ids, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int32)
        offsets = np.asarray(offsets, dtype=np.int64)
        if ids.ndim != 1 or codes.shape != ids.shape:
            raise ValueError(f"{len(ids)} ids but {len(codes)} label codes")
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(blob):
            raise ValueError("label offsets do not span the label text")
        if len(offsets) > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError("label offsets are not ascending")
        if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(offsets) - 1):
            raise ValueError("a label code is out of range")
        if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
            order = np.argsort(ids, kind="stable")  # numpy sorts without holding the GIL
            ids, codes = ids[order], codes[order]
            if bool((ids[1:] == ids[:-1]).any()):
                raise ValueError(f"id {int(ids[1:][ids[1:] == ids[:-1]][0])} is listed twice")
        table = cls(ids, codes, offsets, blob)
        return table._compacted() if compact else table

    def _compacted(self) -> LabelTable:
        """This table without labels no id uses (their codes renumbered)."""
        count = len(self._offsets) - 1
        used = np.zeros(count, dtype=bool)
        used[self._codes] = True
        if used.all():
            return self
        keep = np.flatnonzero(used)
        renumber = np.cumsum(used, dtype=np.int64) - 1
        starts, ends = self._offsets[keep].tolist(), self._offsets[keep + 1].tolist()
        offsets, blob = _join_slices(self._blob, starts, ends)
        return LabelTable(self._ids, renumber[self._codes].astype(np.int32), offsets, blob)

    # ------------------------------------------------------------------ the arrays

    @property
    def ids(self) -> np.ndarray:
        """The ids, sorted ascending (read-only)."""
        return self._ids

    @property
    def codes(self) -> np.ndarray:
        """Per id (in ``ids`` order) the number of its label in ``names()`` (read-only)."""
        return self._codes

    @property
    def distinct(self) -> int:
        """How many distinct labels the table holds (no decoding)."""
        return len(self._offsets) - 1

    def name(self, code: int) -> str:
        """The label with number ``code``."""
        if self._names is not None:
            return self._names[code]
        return self._blob[int(self._offsets[code]) : int(self._offsets[code + 1])].decode(_ENCODING, _ERRORS)

    def names(self) -> tuple[str, ...]:
        """The distinct labels, by code; decoded once, in slices that let other threads run between them."""
        if self._names is None:
            offsets = self._offsets
            out: list[str] = []
            for start in range(0, self.distinct, _SLICE):
                if start:
                    yield_gil()
                bounds = offsets[start : start + _SLICE + 1].tolist()
                blob = self._blob
                out.extend(blob[a:b].decode(_ENCODING, _ERRORS) for a, b in zip(bounds, bounds[1:]))
            self._names = tuple(out)
        return self._names

    @property
    def label_set(self) -> frozenset[str]:
        """The distinct labels as a set (computed once, see ``names``)."""
        if self._label_set is None:
            names = self.names()
            seen: set[str] = set()
            for start in range(0, len(names), _SLICE):
                if start:
                    yield_gil()
                seen.update(names[start : start + _SLICE])
            self._label_set = frozenset(seen)
        return self._label_set

    def share_names(self, other: LabelTable | None) -> bool:
        """Take ``other``'s decoded labels and label set when both tables have the same labels.

        A reload that did not change the people enrolled then decodes nothing, and the label
        sets of the two generations are one object (cheap to compare and to free). Returns
        whether they were shared.
        """
        if other is None or other is self or other._label_set is None:
            return False
        if self._blob != other._blob or not np.array_equal(self._offsets, other._offsets):
            return False
        self._names, self._label_set, self._code_of = other._names, other._label_set, other._code_of
        return True

    def counts(self) -> dict[str, int]:
        """Number of ids per label."""
        per_code = np.bincount(self._codes, minlength=self.distinct)
        return dict(zip(self.names(), per_code.tolist()))

    def code_of(self, label: str) -> int | None:
        """The number of ``label``, None when no id has it."""
        return self._codes_by_name().get(label)

    def _codes_by_name(self) -> dict[str, int]:
        if self._code_of is None:
            self._code_of = {name: code for code, name in enumerate(self.names())}
        return self._code_of

    def ids_for(self, label: str) -> np.ndarray:
        """Ids labelled ``label``, ascending."""
        code = self.code_of(label)
        if code is None:
            return np.empty(0, dtype=np.int64)
        return self._ids[self._codes == code]

    def max_id(self) -> int | None:
        """The highest id, None for an empty table."""
        return int(self._ids[-1]) if len(self._ids) else None

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``ids``, found mask) of the given ids; positions of absent ids are meaningless."""
        wanted = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._ids, wanted)
        pos = np.minimum(pos, max(len(self._ids) - 1, 0))
        found = self._ids[pos] == wanted if len(self._ids) else np.zeros(wanted.shape, dtype=bool)
        return pos, found

    def lookup(self, ids: np.ndarray) -> list[str]:
        """The labels of ``ids`` (each must be present: KeyError otherwise)."""
        pos, found = self.positions(ids)
        if not found.all():
            raise KeyError(int(np.asarray(ids)[~found][0]))
        return [self.name(code) for code in self._codes[pos].tolist()]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Per id, whether the table holds it."""
        return self.positions(ids)[1]

    # ------------------------------------------------------------------ new tables

    def with_added(self, ids: Iterable[int], labels: Iterable[str]) -> LabelTable:
        """This table plus ``ids`` labelled ``labels``; ids already present are refused (ValueError)."""
        new_ids = np.fromiter((int(i) for i in ids), dtype=np.int64)
        new_labels = [str(label) for label in labels]
        if len(new_ids) != len(new_labels):
            raise ValueError(f"{len(new_ids)} ids but {len(new_labels)} labels")
        if not len(new_ids):
            return self
        if bool(self.contains(new_ids).any()) or len(np.unique(new_ids)) != len(new_ids):
            raise ValueError("an id to add is already in the table")
        code_of = dict(self._codes_by_name())
        codes = np.fromiter((code_of.setdefault(label, len(code_of)) for label in new_labels), np.int32, len(new_labels))
        fresh = list(code_of)[self.distinct :]
        fresh_offsets, fresh_blob = encode_names(fresh)
        offsets = np.concatenate([self._offsets, fresh_offsets[1:] + len(self._blob)])
        all_ids = np.concatenate([self._ids, new_ids])
        all_codes = np.concatenate([self._codes, codes])
        after_the_last = not len(self._ids) or int(new_ids.min()) > int(self._ids[-1])
        if not after_the_last or not bool((new_ids[1:] > new_ids[:-1]).all()):
            order = np.argsort(all_ids, kind="stable")
            all_ids, all_codes = all_ids[order], all_codes[order]
        return LabelTable(all_ids, all_codes, offsets, self._blob + fresh_blob)

    def without(self, ids: Iterable[int] | np.ndarray) -> LabelTable:
        """This table without ``ids`` (absent ids are ignored)."""
        drop = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        keep = ~np.isin(self._ids, drop)
        if keep.all():
            return self
        return LabelTable(self._ids[keep], self._codes[keep], self._offsets, self._blob)._compacted()

    # ------------------------------------------------------------------ Mapping

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, key: int) -> str:
        try:
            wanted = int(key)
        except (TypeError, ValueError):
            raise KeyError(key) from None
        pos = int(np.searchsorted(self._ids, wanted))
        if pos >= len(self._ids) or int(self._ids[pos]) != wanted:
            raise KeyError(key)
        return self.name(int(self._codes[pos]))

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids.tolist())

    def values(self) -> ValuesView[str]:
        return _Values(self)

    def items(self) -> ItemsView[int, str]:
        return _Items(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelTable) and not np.array_equal(self._ids, other._ids):
            return False  # the common case, decided without decoding a label
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LabelTable({len(self)} ids, {self.distinct} labels)"


class _Values(ValuesView):
    _mapping: LabelTable

    def __iter__(self) -> Iterator[str]:
        names = self._mapping.names()
        return (names[c] for c in self._mapping.codes.tolist())


class _Items(ItemsView):
    _mapping: LabelTable

    def __iter__(self) -> Iterator[tuple[int, str]]:
        names = self._mapping.names()
        return zip(self._mapping.ids.tolist(), (names[c] for c in self._mapping.codes.tolist()))


def _frozen(array: Any) -> np.ndarray:
    out = np.asarray(array)
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


def _join_slices(blob: bytes, starts: list[int], ends: list[int]) -> tuple[np.ndarray, bytes]:
    pieces = [blob[a:b] for a, b in zip(starts, ends)]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((b - a for a, b in zip(starts, ends)), np.int64, len(pieces)), out=offsets[1:])
    return offsets, b"".join(pieces)

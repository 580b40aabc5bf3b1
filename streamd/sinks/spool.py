"""An ordered, crash-safe, bounded on-disk queue of event payloads: one small JSON file per event.

Why one file per event: appending is write-temp + fsync + rename + fsync(dir), so a crash leaves
either the whole event or nothing (a leftover ``*.tmp`` is removed on open); removing an
acknowledged event is one unlink; dropping the oldest to honour the size bound needs no rewriting.
Events are few per second at most, so the per-file cost does not matter.

Names are zero-padded counters (``000000000042.json``): sorting them is the order of appending,
across restarts too (the counter resumes after the highest name found).

Bounds: ``max_bytes`` (sum of file sizes) and ``max_age_s`` (time since appending). What goes over
is dropped oldest first and reported through ``on_drop(reason, count)`` (``spool_full``,
``spool_expired``, ``spool_corrupt``), so the caller counts it in a metric.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamd.errors import ConfigError

log = logging.getLogger(__name__)

_SUFFIX = ".json"
_FORMAT = 1


@dataclass(frozen=True)
class SpoolRecord:
    """One spooled payload: its file name (the order key), the payload and when it was appended."""

    name: str
    payload: dict[str, Any]
    spooled_at: float


@dataclass
class _Entry:
    size: int
    spooled_at: float


class Spool:
    """The queue; not thread-safe (one publisher thread owns it)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._on_drop = on_drop or (lambda reason, n: None)
        self._clock = clock
        self._fsync = fsync
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._next = 1
        self._dir_fd: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> list[SpoolRecord]:
        """Create the directory, clean up an interrupted append, index what is there.

        Returns every record found, oldest first (the caller may restore counters from them).
        Unreadable records are removed and reported as ``spool_corrupt``.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise ConfigError(f"mqtt.spool_dir {self.directory}: cannot use it ({exc.strerror})") from None
        records = []
        corrupt = 0
        for name in names:
            path = self.directory / name
            if name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # an append interrupted before its rename: never acknowledged
                continue
            if not name.endswith(_SUFFIX) or not name[: -len(_SUFFIX)].isdigit():
                continue
            record = self._load(name)
            if record is None:
                corrupt += 1
                continue
            self._entries[name] = _Entry(path.stat().st_size, record.spooled_at)
            self._bytes += self._entries[name].size
            self._next = max(self._next, int(name[: -len(_SUFFIX)]) + 1)
            records.append(record)
        if corrupt:
            self._on_drop("spool_corrupt", corrupt)
        return records

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    # ------------------------------------------------------------------ queue

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Sum of the sizes of the spooled files."""
        return self._bytes

    def names(self) -> list[str]:
        """Record names, oldest first."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def append(self, payload: dict[str, Any], *, protected: Container[str] = ()) -> str:
        """Write ``payload`` durably; returns its name. Drops the oldest records (not ``protected``) over max_bytes."""
        return self.append_many([payload], protected=protected)[0]

    def append_many(self, payloads: list[dict[str, Any]], *, protected: Container[str] = ()) -> list[str]:
        """Write several payloads durably, in order; returns their names.

        Group commit: each file's data is fsync'd, the directory once for the whole batch (a
        directory fsync costs as much as a file's, so a burst of events costs about half).
        """
        if self._dir_fd is None:
            raise RuntimeError("Spool.append before open()")
        now = self._clock()
        names = []
        for payload in payloads:
            data = json.dumps({"v": _FORMAT, "spooled_at": now, "payload": payload}, separators=(",", ":")).encode()
            name = f"{self._next:012d}{_SUFFIX}"
            self._next += 1
            tmp = self.directory / (name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / name)
            self._entries[name] = _Entry(len(data), now)
            self._bytes += len(data)
            names.append(name)
        if self._fsync and names:
            os.fsync(self._dir_fd)  # make the renames themselves durable
        self._enforce_size(protected)
        return names

    def read(self, name: str) -> SpoolRecord | None:
        """The record, or None when it is gone or unreadable (an unreadable one is removed and reported)."""
        if name not in self._entries:
            return None
        record = self._load(name)
        if record is None:
            self._forget(name)
            self._on_drop("spool_corrupt", 1)
        return record

    def remove(self, name: str) -> bool:
        """Delete an acknowledged (or dropped) record; False if it was already gone."""
        if name not in self._entries:
            return False
        self._forget(name)
        (self.directory / name).unlink(missing_ok=True)
        return True

    def expire(self, *, protected: Container[str] = ()) -> int:
        """Drop records older than max_age_s (except ``protected``); returns how many."""
        cutoff = self._clock() - self.max_age_s
        old = [n for n, e in self._entries.items() if e.spooled_at < cutoff and n not in protected]
        for name in old:
            self.remove(name)
        if old:
            log.warning("MQTT spool: dropped %d event(s) older than %.0f s", len(old), self.max_age_s)
            self._on_drop("spool_expired", len(old))
        return len(old)

    # ------------------------------------------------------------------ internals

    def _enforce_size(self, protected: Container[str]) -> None:
        dropped = 0
        if self._bytes <= self.max_bytes:
            return
        for name in list(self._entries):
            if self._bytes <= self.max_bytes:
                break
            if name in protected:
                continue
            self.remove(name)
            dropped += 1
        if dropped:
            log.warning(
                "MQTT spool full (%d bytes max): dropped the %d oldest event(s)", self.max_bytes, dropped
            )
            self._on_drop("spool_full", dropped)

    def _forget(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= entry.size

    def _load(self, name: str) -> SpoolRecord | None:
        path = self.directory / name
        try:
            doc = json.loads(path.read_bytes())
            payload = doc["payload"]
            spooled_at = float(doc["spooled_at"])
            if not isinstance(payload, dict):
                raise TypeError("payload is not an object")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("MQTT spool: removing unreadable record %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None
        return SpoolRecord(name, payload, spooled_at)

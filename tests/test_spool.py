"""The on-disk spool: order, durability across reopen, bounds by size and age, damaged files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamd.errors import ConfigError
from streamd.sinks.spool import Spool


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Drops:
    """Records on_drop(reason, count) calls."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, count: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count


def open_spool(directory: Path, *, max_bytes: int = 1 << 20, max_age_s: float = 3600.0, clock=None, drops=None):
    spool = Spool(directory, max_bytes=max_bytes, max_age_s=max_age_s, on_drop=drops, clock=clock or Clock())
    records = spool.open()
    return spool, records


def test_records_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    # given a spool with three events appended
    spool, _ = open_spool(tmp_path)
    names = [spool.append({"event_id": f"e{i}", "seq": i}) for i in range(3)]
    spool.close()

    # when it is opened again (a daemon restart)
    again, records = open_spool(tmp_path)

    # then every event is there, in the order appended, and new ones sort after them
    assert [r.name for r in records] == names
    assert [r.payload["event_id"] for r in records] == ["e0", "e1", "e2"]
    later = again.append({"event_id": "e3"})
    assert again.names() == names + [later]
    assert later > names[-1]


def test_removed_record_is_gone_for_good(tmp_path: Path) -> None:
    # given two spooled events
    spool, _ = open_spool(tmp_path)
    first = spool.append({"event_id": "a"})
    spool.append({"event_id": "b"})

    # when the first is acknowledged
    assert spool.remove(first) is True

    # then it is neither in the spool nor on disk, also after reopening
    assert len(spool) == 1 and spool.read(first) is None
    assert spool.remove(first) is False
    spool.close()
    _, records = open_spool(tmp_path)
    assert [r.payload["event_id"] for r in records] == ["b"]


def test_size_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    # given a spool bounded to about three records
    drops = Drops()
    spool, _ = open_spool(tmp_path, drops=drops)
    size = len(json.dumps({"v": 1, "spooled_at": 1000.0, "payload": {"event_id": "x0"}}, separators=(",", ":")))
    spool.max_bytes = 3 * size

    # when five are appended
    names = [spool.append({"event_id": f"x{i}"}) for i in range(5)]

    # then the two oldest were dropped and counted as spool_full
    assert spool.names() == names[2:]
    assert drops.counts == {"spool_full": 2}
    assert spool.bytes <= spool.max_bytes
    assert sorted(os.listdir(tmp_path)) == names[2:]


def test_size_bound_spares_protected_records(tmp_path: Path) -> None:
    # given a full spool whose oldest record is being sent (protected)
    drops = Drops()
    spool, _ = open_spool(tmp_path, drops=drops)
    size = len(json.dumps({"v": 1, "spooled_at": 1000.0, "payload": {"event_id": "x0"}}, separators=(",", ":")))
    spool.max_bytes = 2 * size
    first = spool.append({"event_id": "x0"})
    second = spool.append({"event_id": "x1"})

    # when another is appended with the first protected
    third = spool.append({"event_id": "x2"}, protected={first})

    # then the oldest unprotected one went instead
    assert spool.names() == [first, third]
    assert second not in spool
    assert drops.counts == {"spool_full": 1}


def test_age_bound_drops_old_records(tmp_path: Path) -> None:
    # given records appended at t=1000 and t=1500 with a 600 s age limit
    clock, drops = Clock(1000.0), Drops()
    spool, _ = open_spool(tmp_path, max_age_s=600.0, clock=clock, drops=drops)
    old = spool.append({"event_id": "old"})
    clock.t = 1500.0
    young = spool.append({"event_id": "young"})

    # when time passes the first one's limit
    clock.t = 1700.0
    dropped = spool.expire()

    # then only the old one is dropped, and counted as spool_expired
    assert dropped == 1
    assert spool.names() == [young]
    assert old not in spool
    assert drops.counts == {"spool_expired": 1}


def test_interrupted_append_and_damaged_record_are_cleaned_up(tmp_path: Path) -> None:
    # given a spool holding one good record, a half-written temp file and a damaged record
    spool, _ = open_spool(tmp_path)
    good = spool.append({"event_id": "good"})
    spool.close()
    (tmp_path / "000000000007.json.tmp").write_bytes(b'{"v":1,"spool')
    (tmp_path / "000000000005.json").write_bytes(b"\x00garbage")
    drops = Drops()

    # when it is reopened
    again, records = open_spool(tmp_path, drops=drops)

    # then only the good record is left; the damaged one is counted, the temp file removed
    assert [r.name for r in records] == [good]
    assert sorted(os.listdir(tmp_path)) == [good]
    assert drops.counts == {"spool_corrupt": 1}
    assert again.append({"event_id": "next"}) > good


def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    # given a spool directory path that is a file
    blocker = tmp_path / "spool"
    blocker.write_text("not a directory")

    # when the spool is opened, then the error names the setting and the path
    with pytest.raises(ConfigError, match=r"mqtt\.spool_dir .*spool: cannot use it"):
        Spool(blocker, max_bytes=4096, max_age_s=60).open()

"""SnapshotStore: best face crop and frame per track, atomic writes, pruning by size and age."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamd.errors import ConfigError
from streamd.snapshots import (
    MAX_PENDING_FRAMES,
    SnapshotSettings,
    SnapshotStore,
    crop_box,
    safe_name,
)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frame(seed: int = 0, h: int = 240, w: int = 320) -> np.ndarray:
    """A noisy picture (noise makes JPEG sizes realistic rather than tiny)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


BOX = (100.0, 60.0, 180.0, 140.0)


def store(tmp_path: Path, **kw) -> SnapshotStore:
    kw.setdefault("max_bytes", 100_000_000)
    kw.setdefault("max_age_s", 3600.0)
    return SnapshotStore(tmp_path / "snaps", **kw)


def test_offer_writes_the_face_crop_and_the_frame(tmp_path: Path):
    # given a store
    s = store(tmp_path, crop_margin=0.25)
    # when a track's first face is offered
    rel = s.offer("door", "01TRACK", frame(), BOX, weight=0.5)
    assert s.flush(5.0)
    # then the crop (box + 25 % per side) and the full frame are JPEG files under <dir>/<camera>/
    assert rel == "door/01TRACK-face.jpg"
    crop = cv2.imread(str(s.dir / rel))
    full = cv2.imread(str(s.dir / "door/01TRACK-frame.jpg"))
    assert crop.shape == (120, 120, 3) and full.shape == (240, 320, 3)
    assert s.files() == ["door/01TRACK-face.jpg", "door/01TRACK-frame.jpg"]
    assert s.total_bytes == sum((s.dir / f).stat().st_size for f in s.files())


def test_only_a_clearly_better_face_replaces_the_snapshot(tmp_path: Path):
    # given a track whose snapshot has weight 0.5, min_gain 10 %
    s = store(tmp_path, min_gain=0.1)
    rel = s.offer("door", "T", frame(1), BOX, weight=0.5)
    before = (s.dir / rel).read_bytes()
    # when a face of weight 0.54 is offered, then one of 0.6
    same = s.offer("door", "T", frame(2), BOX, weight=0.54)
    unchanged = (s.dir / rel).read_bytes()
    better = s.offer("door", "T", frame(3), BOX, weight=0.6)
    assert s.flush(5.0)
    # then the first leaves the file alone, the second replaces it under the same name
    assert same == better == rel
    assert unchanged == before and (s.dir / rel).read_bytes() != before
    assert len(s.files()) == 2


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path):
    # given a store and a temporary file left by a crash mid-write
    (tmp_path / "snaps" / "door").mkdir(parents=True)
    stale = tmp_path / "snaps" / "door" / ".T-face.jpg.123.456.tmp"
    stale.write_bytes(b"half a jpeg")
    s = store(tmp_path)
    # when faces are written
    for k in range(3):
        s.offer("door", f"T{k}", frame(k), BOX, weight=0.5)
    assert s.flush(5.0)
    # then the stale file is gone and no temporary file is left beside the JPEGs
    names = sorted(p.name for p in (s.dir / "door").iterdir())
    assert names == sorted(f"T{k}-{kind}.jpg" for k in range(3) for kind in ("face", "frame"))


def test_a_failed_write_is_logged_and_keeps_the_previous_snapshot(tmp_path: Path, caplog):
    # given a track with a snapshot, whose file name is then taken by a directory (the write must fail)
    s = store(tmp_path)
    rel = s.offer("door", "T", frame(), BOX, weight=0.5)
    assert s.flush(5.0)
    (s.dir / rel).unlink()
    (s.dir / rel).mkdir()
    # when a better face of the track is offered
    with caplog.at_level(logging.WARNING, logger="streamd.snapshots"):
        kept = s.offer("door", "T", frame(1), BOX, weight=0.9)
    assert s.flush(5.0)
    # then no exception: a warning names the file, the previous path is kept, no temporary file remains
    assert kept == rel
    assert f"snapshot {s.dir / rel} not written" in caplog.text
    assert not list(s.dir.rglob("*.tmp"))


def test_a_camera_directory_that_cannot_be_made_gives_no_snapshot(tmp_path: Path, caplog):
    # given a file where a camera's directory would go
    s = store(tmp_path)
    (s.dir / "gate").write_bytes(b"not a directory")
    # when / then
    with caplog.at_level(logging.WARNING, logger="streamd.snapshots"):
        assert s.offer("gate", "U", frame(), BOX, weight=0.5) is None
    assert "gate/U-face.jpg not written" in caplog.text


def test_pruned_by_total_size_oldest_first(tmp_path: Path):
    # given a store capped at about 3 tracks' worth of files
    clock = Clock()
    probe = store(tmp_path / "probe")
    probe.offer("door", "P", frame(0), BOX, 0.5)
    assert probe.flush(5.0)
    per_track = probe.total_bytes
    s = store(tmp_path, max_bytes=int(per_track * 3.5), clock=clock)
    # when 6 tracks are written, one second apart
    for k in range(6):
        clock.now += 1
        s.offer("door", f"T{k}", frame(k), BOX, 0.5)
        assert s.flush(5.0)
    # then the total stays under the cap and the newest tracks' files are the ones kept
    assert s.total_bytes <= s.max_bytes
    kept = {f.split("-")[0] for f in s.files()}
    assert "door/T5" in kept and "door/T0" not in kept
    assert sorted(p.relative_to(s.dir).as_posix() for p in s.dir.rglob("*.jpg")) == sorted(s.files())


def test_pruned_by_age(tmp_path: Path):
    # given files written at t and t + 50 s, a maximum age of 100 s
    clock = Clock()
    s = store(tmp_path, max_age_s=100.0, clock=clock)
    s.offer("door", "OLD", frame(0), BOX, 0.5)
    assert s.flush(5.0)
    clock.now += 50
    s.offer("door", "NEW", frame(1), BOX, 0.5)
    assert s.flush(5.0)
    # when pruning at t + 120 s
    deleted = s.prune(now=clock.now + 70)
    # then only the old track's files go
    assert deleted == ["door/OLD-face.jpg", "door/OLD-frame.jpg"]
    assert not (s.dir / "door/OLD-face.jpg").exists() and (s.dir / "door/NEW-face.jpg").exists()


def test_files_from_a_previous_run_are_counted_and_pruned(tmp_path: Path):
    # given snapshot files left by a previous run, one of them two days old
    old_dir = tmp_path / "snaps" / "door"
    old_dir.mkdir(parents=True)
    for name, age in (("A-face.jpg", 2 * 86400), ("B-face.jpg", 10)):
        (old_dir / name).write_bytes(b"x" * 1000)
        t = 1_700_000_000.0 - age
        os.utime(old_dir / name, (t, t))
    # when a store with a one-day age limit starts
    s = store(tmp_path, max_age_s=86400.0, clock=Clock())
    # then the old file is deleted and the recent one counted
    assert s.files() == ["door/B-face.jpg"] and s.total_bytes == 1000
    assert not (old_dir / "A-face.jpg").exists()


def test_released_track_starts_afresh_and_pruned_crop_is_not_reported(tmp_path: Path):
    # given a track's snapshot pruned away by age
    clock = Clock()
    s = store(tmp_path, max_age_s=10.0, clock=clock)
    s.offer("door", "T", frame(), BOX, 0.9)
    clock.now += 20
    s.prune()
    # when the same track offers a worse face
    rel = s.offer("door", "T", frame(), BOX, 0.2)
    # then it is written (the old file is gone, so the path must point at a real file)
    assert rel == "door/T-face.jpg" and (s.dir / rel).exists()


@pytest.mark.parametrize(
    ("name", "safe"),
    [("door", "door"), ("front door", "front_door"), ("../etc", ".._etc"), ("..", "_.."), ("a/b\\c", "a_b_c"), ("", "_")],
)
def test_camera_names_become_safe_directory_names(name: str, safe: str):
    # given / when / then
    assert safe_name(name) == safe


def test_a_crop_at_the_picture_edge_is_clipped():
    # given a face box hanging over the top-left corner / when / then
    assert crop_box((240, 320, 3), (-10.0, -20.0, 40.0, 30.0), 0.25) == (0, 0, 53, 43)


def test_frame_can_be_left_out(tmp_path: Path):
    # given / when
    s = store(tmp_path, full_frame=False)
    s.offer("door", "T", frame(), BOX, 0.5)
    # then
    assert s.files() == ["door/T-face.jpg"]


def test_from_settings_disabled_gives_no_store(tmp_path: Path):
    # given / when / then
    assert SnapshotStore.from_settings(SnapshotSettings(enabled=False, dir=tmp_path)) is None
    s = SnapshotStore.from_settings(SnapshotSettings(dir=tmp_path / "s", max_size_mb=2, max_age_days=0.5))
    assert s is not None and (s.max_bytes, s.max_age_s) == (2 * 1024 * 1024, 43200.0)


def test_an_uncreatable_directory_is_a_config_error(tmp_path: Path):
    # given a file where the directory should be
    (tmp_path / "file").write_bytes(b"")
    # when / then
    with pytest.raises(ConfigError, match=r"^snapshots.dir .*/file/snaps: cannot create the directory \("):
        SnapshotStore(tmp_path / "file" / "snaps", 1000, 10.0)


class HeldEncoder:
    """Wraps a store's JPEG encoder: full frames wait for ``release`` (a slow disk or a busy core)."""

    def __init__(self, store: SnapshotStore) -> None:
        self.encode, self.frames = store._encode, []
        self.started, self.go = threading.Event(), threading.Event()
        store._encode = self

    def __call__(self, image: np.ndarray, quality: int) -> bytes:
        if image.shape[0] >= 240:  # a full frame, not a crop
            self.frames.append(int(image[0, 0, 0]))
            self.started.set()
            assert self.go.wait(10.0)
        return self.encode(image, quality)


def marked(value: int) -> np.ndarray:
    """A frame whose top-left pixel says which one it is."""
    image = frame(value)
    image[0, 0] = value
    return image


def test_the_crop_is_written_at_once_and_the_frame_by_the_writer_thread(tmp_path: Path):
    # given a store whose frame encoding is held up
    s = store(tmp_path)
    held = HeldEncoder(s)
    # when a face is offered
    rel = s.offer("door", "T", marked(7), BOX, weight=0.5)
    # then the crop is on disk before offer returns, the frame is not yet (and offer did not wait for it)
    assert held.started.wait(5.0)
    assert (s.dir / rel).exists() and not (s.dir / "door/T-frame.jpg").exists()
    assert threading.current_thread().name != "streamd-snapshots"
    # and once the encoder goes on, the frame follows
    held.go.set()
    assert s.flush(5.0)
    assert cv2.imread(str(s.dir / "door/T-frame.jpg")).shape == (240, 320, 3)


def test_only_the_newest_waiting_frame_of_a_track_is_encoded(tmp_path: Path):
    # given the writer busy with a track's first frame
    s = store(tmp_path, min_gain=0.0)
    held = HeldEncoder(s)
    s.offer("door", "T", marked(1), BOX, weight=0.1)
    assert held.started.wait(5.0)
    # when the track improves three times meanwhile
    for k, weight in ((2, 0.2), (3, 0.3), (4, 0.4)):
        s.offer("door", "T", marked(k), BOX, weight=weight)
    held.go.set()
    assert s.flush(5.0)
    # then only the first and the newest frame were encoded, and the file holds the newest
    assert held.frames == [1, 4]
    assert (s.dir / "door/T-frame.jpg").read_bytes() == held.encode(marked(4), s.jpeg_quality)


def test_frames_beyond_the_waiting_limit_are_skipped_and_reported(tmp_path: Path, caplog):
    # given the writer held up on one track's frame
    s = store(tmp_path)
    held = HeldEncoder(s)
    s.offer("door", "FIRST", marked(0), BOX, weight=0.5)
    assert held.started.wait(5.0)
    # when more tracks offer frames than may wait
    with caplog.at_level(logging.WARNING, logger="streamd.snapshots"):
        for k in range(MAX_PENDING_FRAMES + 3):
            assert s.offer("door", f"T{k:02d}", marked(k), BOX, weight=0.5) == f"door/T{k:02d}-face.jpg"
    held.go.set()
    assert s.flush(10.0)
    # then every face crop is written, the oldest 3 waiting frames are skipped, and a warning says so
    # (the first skip at once, the next ones in a minute: a slow disk must not flood the log)
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warnings == ["snapshots: 1 full-frame snapshot(s) skipped: the writer is behind (a slow disk?)"]
    frames = sorted(p.name for p in (s.dir / "door").glob("*-frame.jpg"))
    assert frames == ["FIRST-frame.jpg"] + [f"T{k:02d}-frame.jpg" for k in range(3, MAX_PENDING_FRAMES + 3)]
    assert len(list((s.dir / "door").glob("*-face.jpg"))) == MAX_PENDING_FRAMES + 4


def test_close_writes_the_waiting_frames_and_later_ones_are_written_inline(tmp_path: Path):
    # given a frame waiting for a held-up writer
    s = store(tmp_path)
    held = HeldEncoder(s)
    s.offer("door", "A", marked(1), BOX, weight=0.5)
    s.offer("door", "B", marked(2), BOX, weight=0.5)
    assert held.started.wait(5.0)
    # when the store is closed (shutdown) once the encoder goes on
    held.go.set()
    assert s.close(5.0)
    # then both frames are on disk
    assert (s.dir / "door/A-frame.jpg").exists() and (s.dir / "door/B-frame.jpg").exists()
    # and a frame offered after close is written before offer returns
    s.offer("door", "C", marked(3), BOX, weight=0.5)
    assert (s.dir / "door/C-frame.jpg").exists()


def test_a_camera_directory_deleted_while_running_is_made_again(tmp_path: Path):
    # given a camera with a snapshot, whose directory an operator then deletes
    s = store(tmp_path)
    s.offer("door", "A", frame(1), BOX, weight=0.5)
    assert s.flush(5.0)
    for p in (s.dir / "door").iterdir():
        p.unlink()
    (s.dir / "door").rmdir()
    # when another track offers a face
    rel = s.offer("door", "B", frame(2), BOX, weight=0.5)
    assert s.flush(5.0)
    # then the directory is made again and both files are written
    assert (s.dir / rel).exists() and (s.dir / "door/B-frame.jpg").exists()

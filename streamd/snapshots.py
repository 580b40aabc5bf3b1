"""Per-track snapshots: the best face crop and its full frame, as JPEG files with size and age limits.

Layout: ``<dir>/<camera>/<track uid>-face.jpg`` and ``<track uid>-frame.jpg``. The track uid is a
ULID, unique across cameras and restarts and sortable by time. Events carry the face crop's path
relative to ``<dir>`` (:meth:`SnapshotStore.offer` returns it).

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a reader
never sees half a JPEG. A new best is written only when a face's weight (size x quality) beats
the track's best by ``min_gain``, which keeps JPEG encoding off most samples. The store keeps a
ledger of its files (scanned once at start) so pruning by total size and by age is cheap; it
runs after every write and whenever :meth:`SnapshotStore.prune` is called.

The face crop is written before :meth:`SnapshotStore.offer` returns, since events name it and
the MQTT snapshot publisher reads it right away. The full frame (about 5 ms of JPEG encoding
for 1280x720, twenty times the crop) is handed to a writer thread of the store's own: the
recognition worker that offered it goes on with the next sample instead of waiting, and when a
track improves again before its frame was written, only the newest frame is encoded. Call
:meth:`SnapshotStore.close` at shutdown so that the frames still waiting are written.

One store may serve every camera: its methods are thread-safe. This module imports OpenCV only
when a store is created, so loading settings stays light.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamd.errors import ConfigError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_TMP_SUFFIX = ".tmp"
#: Full frames waiting for the writer thread at most (~2.7 MB each at 1280x720). Beyond it the
#: oldest waiting frame is skipped (its track keeps its previous frame file): a picture is never
#: worth holding up recognition or the daemon's memory.
MAX_PENDING_FRAMES = 16
#: Skipped frames are reported at most once per this many seconds.
_SKIP_LOG_INTERVAL_S = 60.0


class SnapshotSettings(BaseModel):
    """Where the best face crop and frame of each track are kept (``snapshots:``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Keep snapshots. Off saves disk writes; events then carry no snapshot.")
    dir: Path = Field(Path("/var/lib/streamd/snapshots"), description="Directory of the snapshot files.")
    max_size_mb: float = Field(
        1024.0, gt=0, description="Total size kept; the oldest files are deleted beyond it."
    )
    max_age_days: float = Field(7.0, gt=0, description="Files older than this are deleted.")
    full_frame: bool = Field(
        True,
        description="Keep the whole frame beside the face crop. Costs about 10x the disk and encode time; a "
        "thread of its own writes it (the newest per track), a few milliseconds after the crop.",
    )
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality; higher is sharper and larger.")
    crop_margin: float = Field(
        0.25, ge=0.0, le=2.0, description="Context kept around the face box, as a fraction of its size per side."
    )
    min_gain: float = Field(
        0.1,
        ge=0.0,
        description="A face replaces a track's snapshot only when its weight (size x quality) is this "
        "fraction higher. Lower keeps a slightly better picture; higher writes less often.",
    )


def safe_name(name: str) -> str:
    """A file-name-safe form of a camera name or key (no separators, never '.' or '..')."""
    cleaned = _UNSAFE.sub("_", name) or "_"
    return "_" + cleaned if set(cleaned) == {"."} else cleaned


def crop_box(shape: tuple[int, ...], box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int, int]:
    """The integer crop (x1, y1, x2, y2) of the box grown by ``margin`` x its size per side, clipped."""
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(np.floor(x1 - mx))),
        max(0, int(np.floor(y1 - my))),
        min(w, int(np.ceil(x2 + mx))),
        min(h, int(np.ceil(y2 + my))),
    )


class SnapshotStore:
    """Keeps each track's best face crop (and frame) under ``dir``, pruned by size and age."""

    def __init__(
        self,
        dir: Path | str,
        max_bytes: int,
        max_age_s: float,
        *,
        jpeg_quality: int = 85,
        crop_margin: float = 0.25,
        full_frame: bool = True,
        min_gain: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from streamd.images import encode_jpeg  # OpenCV: only when snapshots are really kept

        self._encode = encode_jpeg
        self.dir = Path(dir)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.jpeg_quality = jpeg_quality
        self.crop_margin = crop_margin
        self.full_frame = full_frame
        self.min_gain = min_gain
        self._clock = clock
        self._lock = threading.Lock()
        #: relative path -> (bytes, mtime), oldest write first.
        self._files: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._total = 0
        #: (camera, key) -> (best weight, relative path of the face crop).
        self._best: dict[tuple[str, str], tuple[float, str]] = {}
        # Full frames waiting for the writer thread: relative path -> image, oldest first.
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()
        self._frames_changed = threading.Condition(threading.Lock())
        self._writing = False
        self._closing = False
        self._writer: threading.Thread | None = None
        self._skipped = 0
        self._last_skip_log = float("-inf")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"snapshots.dir {self.dir}: cannot create the directory ({exc.strerror})") from None
        self._scan()
        self.prune()

    @classmethod
    def from_settings(cls, settings: SnapshotSettings) -> SnapshotStore | None:
        """The store the settings describe, or None when snapshots are disabled."""
        if not settings.enabled:
            return None
        return cls(
            settings.dir,
            max_bytes=int(settings.max_size_mb * 1024 * 1024),
            max_age_s=settings.max_age_days * 86400.0,
            jpeg_quality=settings.jpeg_quality,
            crop_margin=settings.crop_margin,
            full_frame=settings.full_frame,
            min_gain=settings.min_gain,
        )

    @property
    def total_bytes(self) -> int:
        """Bytes of the snapshot files the store knows of."""
        return self._total

    def files(self) -> list[str]:
        """Relative paths of the snapshot files, oldest first."""
        with self._lock:
            return list(self._files)

    def offer(
        self,
        camera: str,
        key: str,
        image: np.ndarray,
        box: tuple[float, float, float, float],
        weight: float,
    ) -> str | None:
        """Keep this face as the track's snapshot if it beats the best so far by ``min_gain``.

        ``key`` names the track (its uid), ``image`` is the BGR frame, ``weight`` the face's
        size x quality weight. Returns the relative path of the track's face crop (the new one,
        or the one kept), or None when the track has none. A failed write is logged, not raised.
        The crop is on disk when this returns; the full frame follows from the writer thread,
        which keeps ``image`` until then (callers must not modify it afterwards).
        """
        best = self._best.get((camera, key))
        if best is not None and weight <= best[0] * (1.0 + self.min_gain):
            return best[1]
        x1, y1, x2, y2 = crop_box(image.shape, box, self.crop_margin)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return best[1] if best else None
        stem = f"{safe_name(camera)}/{safe_name(key)}"
        face_path = f"{stem}-face.jpg"
        try:
            self._write(face_path, self._encode(np.ascontiguousarray(image[y1:y2, x1:x2]), self.jpeg_quality))
        except Exception as exc:  # disk full, permissions: never break the frame path for a picture
            log.warning("snapshot %s not written: %s", self.dir / face_path, exc)
            return best[1] if best else None
        self._best[(camera, key)] = (weight, face_path)
        if self.full_frame:
            self._queue_frame(f"{stem}-frame.jpg", image)
        self.prune()
        return face_path

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the full frames offered so far are written; False if ``timeout`` s passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._frames_changed:
            while self._frames or self._writing:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._frames_changed.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write the full frames still waiting and stop the writer thread (shutdown).

        True when everything was written within ``timeout`` s. Frames offered afterwards are
        written in the caller's thread.
        """
        with self._frames_changed:
            self._closing = True
            self._frames_changed.notify_all()
            writer = self._writer
        if writer is None:
            return True
        writer.join(timeout)
        return not writer.is_alive()

    def _queue_frame(self, rel: str, image: np.ndarray) -> None:
        """Hand a track's new best frame to the writer thread (replacing one it has not written yet)."""
        with self._frames_changed:
            if self._closing:
                inline = True
            else:
                inline = False
                self._frames.pop(rel, None)
                self._frames[rel] = image
                while len(self._frames) > MAX_PENDING_FRAMES:
                    self._frames.popitem(last=False)
                    self._skipped += 1
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_frames, name="streamd-snapshots", daemon=True)
                    self._writer.start()
                self._frames_changed.notify_all()
            skipped = self._take_skipped()
        if inline:
            self._write_frame(rel, image)
        if skipped:
            log.warning("snapshots: %d full-frame snapshot(s) skipped: the writer is behind (a slow disk?)", skipped)

    def _write_frames(self) -> None:
        """The writer thread: encode and write waiting frames, oldest first, until closed and drained."""
        while True:
            with self._frames_changed:
                while not self._frames and not self._closing:
                    self._frames_changed.wait()
                if not self._frames:
                    return
                rel, image = self._frames.popitem(last=False)
                self._writing = True
            try:
                self._write_frame(rel, image)
                self.prune()
            finally:
                with self._frames_changed:
                    self._writing = False
                    self._frames_changed.notify_all()

    def _write_frame(self, rel: str, image: np.ndarray) -> None:
        try:
            self._write(rel, self._encode(image, self.jpeg_quality))
        except Exception as exc:  # the track keeps its previous frame file, if any
            log.warning("snapshot %s not written: %s", self.dir / rel, exc)

    def _take_skipped(self) -> int:
        """Frames skipped since the last report, when a report is due (else 0); under the lock."""
        now = time.monotonic()
        if not self._skipped or now - self._last_skip_log < _SKIP_LOG_INTERVAL_S:
            return 0
        count, self._skipped, self._last_skip_log = self._skipped, 0, now
        return count

    def release(self, camera: str, key: str) -> None:
        """Forget a finished track's best weight (its files stay until pruned)."""
        self._best.pop((camera, key), None)

    def prune(self, now: float | None = None) -> list[str]:
        """Delete files older than ``max_age_s``, then the oldest until under ``max_bytes``.

        Returns the relative paths deleted.
        """
        now = self._clock() if now is None else now
        deleted: list[str] = []
        with self._lock:
            while self._files:
                rel, (size, mtime) = next(iter(self._files.items()))
                if now - mtime <= self.max_age_s and self._total <= self.max_bytes:
                    break
                self._files.popitem(last=False)
                self._total -= size
                try:
                    (self.dir / rel).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("snapshot %s not deleted: %s", self.dir / rel, exc)
                deleted.append(rel)
            if deleted:
                gone = set(deleted)
                for k in [k for k, (_, rel) in self._best.items() if rel in gone]:
                    del self._best[k]  # a live track whose crop was pruned starts afresh
        return deleted

    def _write(self, rel: str, data: bytes) -> None:
        path = self.dir / rel
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}")
        try:
            try:
                fh = open(tmp, "wb")
            except FileNotFoundError:  # a camera's first snapshot, or its directory was deleted
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(tmp, "wb")
            with fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            old = self._files.pop(rel, None)
            if old is not None:
                self._total -= old[0]
            self._files[rel] = (len(data), self._clock())
            self._total += len(data)

    def _scan(self) -> None:
        found: list[tuple[float, str, int]] = []
        for path in self.dir.rglob("*"):
            if not path.is_file():
                continue
            if path.name.endswith(_TMP_SUFFIX):
                path.unlink(missing_ok=True)  # left by a crash mid-write
                continue
            if path.suffix.lower() != ".jpg":
                continue
            st = path.stat()
            found.append((st.st_mtime, path.relative_to(self.dir).as_posix(), st.st_size))
        for mtime, rel, size in sorted(found):
            self._files[rel] = (size, mtime)
            self._total += size

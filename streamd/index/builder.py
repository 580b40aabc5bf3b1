"""Build, append to and remove from a feature library on disk (PaddleX's build/append/remove_index).

Gallery images become vectors through a face engine; each image is reported (faces found,
enrolled or skipped and why) and a bad image never stops the run. The library on disk is only
replaced at the end, atomically, and only when the run produced something to save: a failed
run leaves what was saved before untouched.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from streamd.errors import FeatureLibraryError, ImageError
from streamd.images import DEFAULT_MAX_PIXELS, read_image
from streamd.index.gallery import Gallery, GalleryItem, read_gallery
from streamd.index.library import (
    ID_MAP_FILE,
    INDEX_INFO_FILE,
    VECTOR_FILE,
    FeatureLibrary,
    IndexType,
    MetricType,
    check_replaceable,
    library_lock,
)
from streamd.types import Face

log = logging.getLogger(__name__)

MultipleFaces = Literal["largest", "skip"]

#: Why an image was not enrolled. ``rejected:<gate reason>`` is added for quality-gate rejections.
SKIP_UNREADABLE = "unreadable"
SKIP_NO_FACE = "no_face"
SKIP_MULTIPLE = "multiple_faces"


class _FaceResult(Protocol):
    face: Face
    vector: np.ndarray | None
    rejected: str | None


class GalleryEngine(Protocol):
    """What the builder needs from a face engine (``streamd.faces.engine.FaceEngine`` fits)."""

    dim: int
    fingerprint: str

    def analyze(self, image: np.ndarray, *, largest_only: bool = False) -> Sequence[_FaceResult]: ...


@dataclass(frozen=True)
class ImageReport:
    """What happened to one gallery image."""

    item: GalleryItem
    faces: int
    enrolled: bool
    reason: str | None = None
    detail: str = ""

    def line(self) -> str:
        """One human-readable line: ``ok``/``skip``, source, label, faces found and why."""
        if self.enrolled:
            note = f" (largest of {self.faces})" if self.faces > 1 else ""
            return f"ok    {self.item.source}  {self.item.label}  faces={self.faces}{note}"
        why = self.detail or self.reason or ""
        return f"skip  {self.item.source}  {self.item.label}  faces={self.faces}  {self.reason}: {why}"


@dataclass
class EnrolSummary:
    """The outcome of build or append: per-image reports, gallery problems, what was saved."""

    index_dir: Path
    reports: list[ImageReport] = field(default_factory=list)
    gallery_problems: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    library: FeatureLibrary | None = None

    @property
    def enrolled(self) -> int:
        return sum(1 for r in self.reports if r.enrolled)

    @property
    def skipped(self) -> Counter[str]:
        """Skipped images by reason (gallery.txt problems count as ``listing``)."""
        counts: Counter[str] = Counter(r.reason for r in self.reports if not r.enrolled and r.reason)
        if self.gallery_problems:
            counts["listing"] += len(self.gallery_problems)
        return counts

    @property
    def per_label(self) -> Counter[str]:
        """Vectors added in this run, per label."""
        return Counter(r.item.label for r in self.reports if r.enrolled)


@dataclass(frozen=True)
class RemoveSummary:
    """The outcome of remove: which ids went, which were not in the library, what is left."""

    index_dir: Path
    removed: tuple[int, ...]
    not_found: tuple[int, ...]
    remaining: int


Progress = Callable[[ImageReport], None]


def enrol_item(
    engine: GalleryEngine,
    item: GalleryItem,
    *,
    multiple_faces: MultipleFaces = "largest",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[ImageReport, np.ndarray | None]:
    """Read one gallery image and pick the face to enrol; never raises for a bad image."""
    try:
        image = read_image(item.path, max_pixels=max_pixels)
    except ImageError as exc:
        return ImageReport(item, faces=0, enrolled=False, reason=SKIP_UNREADABLE, detail=str(exc)), None
    # All faces, not largest_only: the report counts them and "skip" mode needs the count.
    results = list(engine.analyze(image, largest_only=False))
    if not results:
        return ImageReport(item, faces=0, enrolled=False, reason=SKIP_NO_FACE, detail="no face found"), None
    if len(results) > 1 and multiple_faces == "skip":
        detail = f"{len(results)} faces (gallery.multiple_faces is skip)"
        return ImageReport(item, faces=len(results), enrolled=False, reason=SKIP_MULTIPLE, detail=detail), None
    chosen = max(results, key=lambda r: r.face.area)
    if chosen.vector is None:
        reason = f"rejected:{chosen.rejected}"
        detail = f"the {'largest ' if len(results) > 1 else ''}face failed the quality gate ({chosen.rejected})"
        return ImageReport(item, faces=len(results), enrolled=False, reason=reason, detail=detail), None
    return ImageReport(item, faces=len(results), enrolled=True), np.asarray(chosen.vector, dtype=np.float32)


def embed_gallery(
    engine: GalleryEngine,
    gallery: Gallery,
    *,
    multiple_faces: MultipleFaces = "largest",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str], list[ImageReport]]:
    """Vectors and labels of the enrolled images, plus a report per image, in gallery order."""
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    reports: list[ImageReport] = []
    for item in gallery.items:
        report, vector = enrol_item(engine, item, multiple_faces=multiple_faces, max_pixels=max_pixels)
        reports.append(report)
        if vector is not None:
            vectors.append(vector)
            labels.append(item.label)
        if progress is not None:
            progress(report)
    matrix = np.stack(vectors) if vectors else np.empty((0, engine.dim), dtype=np.float32)
    return matrix, labels, reports


def _nothing_enrolled(data_root: Path, reports: Sequence[ImageReport]) -> FeatureLibraryError:
    reasons = Counter(r.reason for r in reports)
    detail = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
    return FeatureLibraryError(
        f"{data_root}: no face enrolled from {len(reports)} images ({detail}); nothing was saved"
    )


def _has_library(index_dir: Path) -> bool:
    return (index_dir / VECTOR_FILE).exists() or (index_dir / ID_MAP_FILE).exists() or (
        index_dir / INDEX_INFO_FILE
    ).exists()


def build_index(
    engine: GalleryEngine,
    data_root: Path | str,
    index_dir: Path | str,
    *,
    index_type: IndexType = "Flat",
    metric_type: MetricType = "IP",
    multiple_faces: MultipleFaces = "largest",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> EnrolSummary:
    """Build a new library from ``data_root`` and save it to ``index_dir`` (replacing any there)."""
    data_root, index_dir = Path(data_root), Path(index_dir)
    gallery = read_gallery(data_root)
    # Fail before minutes of embedding when the save would be refused anyway.
    lib = FeatureLibrary.create(engine.dim, index_type=index_type, metric_type=metric_type, fingerprint=engine.fingerprint)
    check_replaceable(index_dir)
    vectors, labels, reports = embed_gallery(
        engine, gallery, multiple_faces=multiple_faces, max_pixels=max_pixels, progress=progress
    )
    if not labels:
        raise _nothing_enrolled(data_root, reports)
    ids = lib.add(vectors, labels)
    with library_lock(index_dir):
        lib.save(index_dir)
    return EnrolSummary(index_dir, reports, gallery.problems, ids, lib)


def load_for_engine(index_dir: Path, engine: GalleryEngine) -> FeatureLibrary:
    """Load a library that vectors from ``engine`` may be added to (same model, same dimension)."""
    lib = FeatureLibrary.load(index_dir, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint)
    if not lib.fingerprint:
        raise FeatureLibraryError(
            f"{index_dir}: index has no model fingerprint (built by PaddleX?), so adding vectors of model "
            f"{engine.fingerprint} could mix two models; rebuild with `streamd gallery build`"
        )
    return lib


def append_index(
    engine: GalleryEngine,
    data_root: Path | str,
    index_dir: Path | str,
    *,
    multiple_faces: MultipleFaces = "largest",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> EnrolSummary:
    """Add the images of ``data_root`` to the library in ``index_dir`` (made by the same model)."""
    data_root, index_dir = Path(data_root), Path(index_dir)
    if not _has_library(index_dir):
        raise FeatureLibraryError(f"{index_dir}: no feature library to append to; create one with `streamd gallery build`")
    gallery = read_gallery(data_root)
    load_for_engine(index_dir, engine)  # refuse another model before embedding anything
    vectors, labels, reports = embed_gallery(
        engine, gallery, multiple_faces=multiple_faces, max_pixels=max_pixels, progress=progress
    )
    if not labels:
        raise _nothing_enrolled(data_root, reports)
    with library_lock(index_dir):
        # Re-load under the lock: another writer may have saved while we were embedding.
        lib = load_for_engine(index_dir, engine)
        ids = lib.add(vectors, labels)
        lib.save(index_dir)
    return EnrolSummary(index_dir, reports, gallery.problems, ids, lib)


def read_ids_file(path: Path | str) -> list[int]:
    """Ids from a file, PaddleX style: the first field of each line (blank lines and # comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FeatureLibraryError(f"{path}: ids file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FeatureLibraryError(f"{path}: cannot read ids file ({getattr(exc, 'strerror', None) or exc})") from None
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            ids.append(int(fields[0]))
        except ValueError:
            raise FeatureLibraryError(f"{path}:{number}: {fields[0]!r} is not an integer id") from None
    if not ids:
        raise FeatureLibraryError(f"{path}: no ids in the file")
    return ids


def remove_from_index(
    index_dir: Path | str,
    *,
    ids: Iterable[int] = (),
    labels: Iterable[str] = (),
) -> RemoveSummary:
    """Remove vectors by id and/or every vector of the given labels, then save atomically.

    Refused (nothing saved) for HNSW32 indexes, and when none of the ids or labels is present.
    """
    index_dir = Path(index_dir)
    wanted_ids = list(dict.fromkeys(int(i) for i in ids))
    wanted_labels = list(dict.fromkeys(labels))
    if not wanted_ids and not wanted_labels:
        raise FeatureLibraryError("nothing to remove: give ids or a label")
    with library_lock(index_dir):
        lib = FeatureLibrary.load(index_dir)
        unknown_labels = [name for name in wanted_labels if not lib.ids_for_label(name)]
        if unknown_labels:
            raise FeatureLibraryError(f"{index_dir}: no vectors with label {unknown_labels[0]!r}; nothing was removed")
        targets = list(wanted_ids)
        for name in wanted_labels:
            targets.extend(lib.ids_for_label(name))
        present = [i for i in dict.fromkeys(targets) if i in lib.labels]
        not_found = tuple(i for i in wanted_ids if i not in lib.labels)
        if not present:
            shown = ", ".join(str(i) for i in not_found[:5]) + (" ..." if len(not_found) > 5 else "")
            raise FeatureLibraryError(f"{index_dir}: none of the ids ({shown}) is in the index; nothing was removed")
        try:
            lib.remove(present)
        except FeatureLibraryError as exc:
            raise FeatureLibraryError(f"{index_dir}: {exc}") from None
        lib.save(index_dir)
    return RemoveSummary(index_dir, tuple(sorted(present)), not_found, lib.ntotal)

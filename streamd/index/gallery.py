"""Reading a gallery data_root: which image files to enrol under which label.

Two layouts, as PaddleX documents them:

* ``data_root/gallery.txt``: one ``path label`` per line, ``path`` relative to data_root (or
  absolute). PaddleX splits each line on a single space and needs exactly two fields, so neither
  paths nor labels can hold spaces there. streamd reads every such line the same way and accepts
  two more forms, without ambiguity:

  - a line containing a TAB is split at its first TAB: ``path<TAB>label``; both may hold spaces
    (``images/Ana Lopez/1.jpg<TAB>Ana Lopez``);
  - a line without a TAB is split at its first run of spaces: the path has no spaces and the
    label is the rest of the line (``images/ana/1.jpg Ana Lopez``).

  Blank lines and lines starting with ``#`` are skipped. A listed file that does not exist, a
  line without a label, or a path listed twice is reported with its line number and skipped.
* No gallery.txt: an image tree ``data_root/images/<ID>/**/*.jpg``, or ``data_root/<ID>/**/*.jpg``
  when there is no ``images`` folder. The label is the ``<ID>`` folder name; nested folders are
  allowed; hidden files are ignored; other files are reported and skipped.

Reading the images themselves (and reporting unreadable ones) is the builder's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamd.errors import FeatureLibraryError
from streamd.images import is_image_path

GALLERY_FILE = "gallery.txt"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class GalleryItem:
    """One image to enrol: its file, its label and where it was listed (``gallery.txt:12`` or a path)."""

    path: Path
    label: str
    source: str


@dataclass(frozen=True)
class Gallery:
    """The images of a data_root, plus one line per problem found while listing them."""

    root: Path
    layout: str
    items: tuple[GalleryItem, ...]
    problems: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        """Distinct labels in first-seen order."""
        return list(dict.fromkeys(item.label for item in self.items))


def parse_gallery_line(line: str) -> tuple[str, str]:
    """``(path, label)`` of one gallery.txt line (see the module doc); ValueError when malformed."""
    text = line.rstrip("\r\n")
    if "\t" in text:
        path, _, label = text.partition("\t")
    else:
        parts = text.strip().split(None, 1)
        path, label = (parts[0], parts[1]) if len(parts) == 2 else (text, "")
    path, label = path.strip(), label.strip()
    if not path:
        raise ValueError("no image path before the label")
    if not label:
        raise ValueError(f"{path}: no label (expected `path label` or `path<TAB>label`)")
    return path, label


def read_gallery(data_root: Path | str) -> Gallery:
    """List the gallery images of ``data_root``; FeatureLibraryError when there are none at all."""
    root = Path(data_root)
    if not root.is_dir():
        raise FeatureLibraryError(f"{root}: gallery data_root not found or not a directory")
    listing = root / GALLERY_FILE
    gallery = _read_listing(root, listing) if listing.is_file() else _read_tree(root)
    if not gallery.items:
        found = f"; {len(gallery.problems)} entries skipped" if gallery.problems else ""
        raise FeatureLibraryError(
            f"{root}: no gallery images found (expected {GALLERY_FILE} or {IMAGES_DIR}/<ID>/*.jpg){found}"
        )
    return gallery


def _read_listing(root: Path, listing: Path) -> Gallery:
    try:
        text = listing.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = listing.read_bytes()[: exc.start].count(b"\n") + 1
        raise FeatureLibraryError(f"{listing}:{line}: not UTF-8 text") from None
    except OSError as exc:
        raise FeatureLibraryError(f"{listing}: cannot read ({exc.strerror})") from None
    items: list[GalleryItem] = []
    problems: list[str] = []
    seen: dict[Path, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{GALLERY_FILE}:{number}"
        try:
            rel, label = parse_gallery_line(line)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        path = root / rel
        if path in seen:
            problems.append(f"{where}: {rel}: already listed at line {seen[path]}")
            continue
        seen[path] = number
        if not path.is_file():
            problems.append(f"{where}: {rel}: file not found")
            continue
        items.append(GalleryItem(path=path, label=label, source=where))
    return Gallery(root=root, layout=GALLERY_FILE, items=tuple(items), problems=tuple(problems))


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively, sorted), without hidden files or hidden folders."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        out.append(path)
    return out


def _read_tree(root: Path) -> Gallery:
    base = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else root
    layout = f"{IMAGES_DIR}/<ID>" if base != root else "<ID>"
    items: list[GalleryItem] = []
    problems: list[str] = []
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            # Files beside the <ID> folders have no label; only images are worth a mention.
            if is_image_path(entry):
                problems.append(f"{entry.relative_to(root)}: not inside an <ID> folder")
            continue
        if not entry.is_dir():
            continue
        for path in _visible_files(entry):
            rel = path.relative_to(root)
            if is_image_path(path):
                items.append(GalleryItem(path=path, label=entry.name, source=str(rel)))
            else:
                problems.append(f"{rel}: not an image file name")
    return Gallery(root=root, layout=layout, items=tuple(items), problems=tuple(problems))

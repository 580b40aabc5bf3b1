"""Gallery listing (gallery.txt and image trees) and build/append/remove with a fake face engine."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from streamd.errors import FeatureLibraryError
from streamd.faces.engine import FaceResult
from streamd.index.builder import (
    append_index,
    build_index,
    enrol_item,
    read_ids_file,
    remove_from_index,
)
from streamd.index.gallery import GalleryItem, parse_gallery_line, read_gallery
from streamd.index.library import FeatureLibrary
from streamd.types import Face

DIM = 8


class FakeEngine:
    """Reads what to "find" from the first pixel of a PNG written by ``face_png``.

    Blue = number of faces, green = 1 when the largest face fails the quality gate, red = a seed
    for the vector. Faces get growing areas, so the last one is the largest.
    """

    def __init__(self, fingerprint: str = "fake-v1", dim: int = DIM) -> None:
        self.fingerprint = fingerprint
        self.dim = dim
        self.calls = 0

    def analyze(self, image: np.ndarray, *, largest_only: bool = False) -> list[FaceResult]:
        self.calls += 1
        faces, rejected, seed = (int(v) for v in image[0, 0])
        out = []
        for k in range(faces):
            face = Face(box=(0, 0, 10 + k, 10 + k), score=0.9)
            if rejected and k == faces - 1:
                out.append(FaceResult(face=face, vector=None, rejected="blurry"))
            else:
                v = np.random.default_rng(seed * 10 + k).standard_normal(self.dim).astype(np.float32)
                out.append(FaceResult(face=face, vector=v / np.linalg.norm(v)))
        return out


def face_png(path: Path, *, faces: int = 1, rejected: bool = False, seed: int = 1, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :] = (faces, int(rejected), seed)
    assert cv2.imwrite(str(path), image)
    return path


# ---------------------------------------------------------------------- gallery.txt lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("images/ann/1.jpg ann", ("images/ann/1.jpg", "ann")),  # PaddleX's form
        ("images/ann/1.jpg Ana Lopez\n", ("images/ann/1.jpg", "Ana Lopez")),  # label with spaces after a space
        ("images/ana lopez/1.jpg\tAna Lopez", ("images/ana lopez/1.jpg", "Ana Lopez")),  # tab: both may hold spaces
        ("images/a.jpg\t Ana \r\n", ("images/a.jpg", "Ana")),
        ("  images/a.jpg    ann  ", ("images/a.jpg", "ann")),
    ],
)
def test_gallery_line_is_split_at_the_first_tab_or_else_the_first_space(line: str, expected: tuple[str, str]) -> None:
    assert parse_gallery_line(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("images/a.jpg", "images/a.jpg: no label"),
        ("images/a.jpg\t", "images/a.jpg: no label"),
        ("\tann", "no image path before the label"),
    ],
)
def test_malformed_gallery_lines(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gallery_line(line)


def test_gallery_txt_with_tabs_spaces_comments_and_a_missing_file(tmp_path: Path) -> None:
    # given
    face_png(tmp_path / "images" / "ann" / "1.png")
    face_png(tmp_path / "images" / "ana lopez" / "1.png")
    face_png(tmp_path / "images" / "bob" / "1.png")
    (tmp_path / "gallery.txt").write_text(
        "# who is who\n"
        "images/ann/1.png ann\n"
        "\n"
        "images/ana lopez/1.png\tAna Lopez\n"
        "images/bob/1.png Bob the Builder\n"
        "images/bob/2.png bob\n"
        "images/ann/1.png ann\n"
        "lonely.png\n",
        encoding="utf-8",
    )
    # when
    gallery = read_gallery(tmp_path)
    # then
    assert [(i.path.relative_to(tmp_path).as_posix(), i.label, i.source) for i in gallery.items] == [
        ("images/ann/1.png", "ann", "gallery.txt:2"),
        ("images/ana lopez/1.png", "Ana Lopez", "gallery.txt:4"),
        ("images/bob/1.png", "Bob the Builder", "gallery.txt:5"),
    ]
    assert gallery.problems == (
        "gallery.txt:6: images/bob/2.png: file not found",
        "gallery.txt:7: images/ann/1.png: already listed at line 2",
        "gallery.txt:8: lonely.png: no label (expected `path label` or `path<TAB>label`)",
    )
    assert gallery.layout == "gallery.txt"


def test_gallery_txt_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "gallery.txt").write_bytes(b"images/a.png ann\nimages/b.png \xe9ric\n")
    with pytest.raises(FeatureLibraryError, match=r"gallery.txt:2: not UTF-8 text"):
        read_gallery(tmp_path)


# ---------------------------------------------------------------------- image trees


def test_images_id_tree_with_nesting_hidden_and_stray_files(tmp_path: Path) -> None:
    # given
    face_png(tmp_path / "images" / "ann" / "1.png")
    face_png(tmp_path / "images" / "ann" / "2019" / "2.png")
    face_png(tmp_path / "images" / "bob" / "1.png")
    (tmp_path / "images" / "bob" / "notes.txt").write_text("hi")
    (tmp_path / "images" / "bob" / ".DS_Store").write_text("x")
    face_png(tmp_path / "images" / ".trash" / "x.png")
    face_png(tmp_path / "images" / "unsorted.png")
    # when
    gallery = read_gallery(tmp_path)
    # then
    assert [(i.source, i.label) for i in gallery.items] == [
        ("images/ann/1.png", "ann"),
        ("images/ann/2019/2.png", "ann"),
        ("images/bob/1.png", "bob"),
    ]
    assert gallery.problems == ("images/bob/notes.txt: not an image file name", "images/unsorted.png: not inside an <ID> folder")
    assert gallery.labels == ["ann", "bob"]


def test_id_folders_directly_under_data_root(tmp_path: Path) -> None:
    face_png(tmp_path / "carol" / "a.png")
    gallery = read_gallery(tmp_path)
    assert [(i.source, i.label) for i in gallery.items] == [("carol/a.png", "carol")]
    assert gallery.layout == "<ID>"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "no gallery images found \\(expected gallery.txt or images/<ID>/\\*.jpg\\)"),
        (lambda root: (root / "gallery.txt").write_text("gone.png ann\n"), "no gallery images found .*; 1 entries skipped"),
    ],
)
def test_empty_gallery(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(FeatureLibraryError, match=message):
        read_gallery(tmp_path)


def test_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(FeatureLibraryError, match="nope: gallery data_root not found or not a directory"):
        read_gallery(tmp_path / "nope")


# ---------------------------------------------------------------------- one image


def _item(path: Path, label: str = "ann") -> GalleryItem:
    return GalleryItem(path=path, label=label, source=path.name)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    return {
        "zero": tmp_path / "zero.jpg",
        "text": tmp_path / "text.jpg",
        "huge": face_png(tmp_path / "huge.png", size=40),
        "gone": tmp_path / "gone.jpg",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("zero", "zero.jpg: empty file \\(0 bytes\\)"),
        ("text", "text.jpg: not an image \\(unrecognised format\\)"),
        ("huge", "huge.png: 40x40 = 1600 pixels is over the cap of 1000"),
        ("gone", "gone.jpg: file not found"),
    ],
)
def test_unreadable_images_are_reported_not_fatal(tmp_path: Path, name: str, message: str) -> None:
    # given
    path = _bad_files(tmp_path)[name]
    # when
    report, vector = enrol_item(FakeEngine(), _item(path), max_pixels=1000)
    # then
    assert vector is None
    assert (report.enrolled, report.reason, report.faces) == (False, "unreadable", 0)
    assert re.search(message, report.detail)
    assert report.line().startswith(f"skip  {path.name}  ann  faces=0  unreadable: ")


@pytest.mark.parametrize(
    ("faces", "rejected", "mode", "enrolled", "reason"),
    [
        (1, False, "largest", True, None),
        (3, False, "largest", True, None),
        (3, False, "skip", False, "multiple_faces"),
        (0, False, "largest", False, "no_face"),
        (2, True, "largest", False, "rejected:blurry"),
    ],
)
def test_faces_found_decide_what_is_enrolled(tmp_path: Path, faces, rejected, mode, enrolled, reason) -> None:
    # given
    path = face_png(tmp_path / "a.png", faces=faces, rejected=rejected, seed=4)
    engine = FakeEngine()
    # when
    report, vector = enrol_item(engine, _item(path), multiple_faces=mode)
    # then
    assert (report.enrolled, report.reason, report.faces) == (enrolled, reason, faces)
    if enrolled:
        expected = engine.analyze(cv2.imread(str(path)))[-1].vector  # the largest face
        np.testing.assert_array_equal(vector, expected)
    else:
        assert vector is None


# ---------------------------------------------------------------------- build / append / remove


def _gallery(root: Path, people: dict[str, int], *, seed0: int = 1) -> Path:
    seed = seed0
    for name, count in people.items():
        for k in range(count):
            face_png(root / "images" / name / f"{k}.png", seed=seed)
            seed += 1
    return root


def test_build_reports_every_image_and_saves_the_enrolled_ones(tmp_path: Path) -> None:
    # given
    root = _gallery(tmp_path / "data", {"ann": 2, "bob": 1})
    face_png(root / "images" / "bob" / "group.png", faces=2)
    face_png(root / "images" / "bob" / "empty.png", faces=0)
    (root / "images" / "ann" / "broken.jpg").write_bytes(b"")
    seen = []
    # when
    summary = build_index(
        FakeEngine(), root, tmp_path / "index", index_type="IVF", metric_type="L2", multiple_faces="skip",
        progress=seen.append,
    )
    # then
    assert summary.enrolled == 3
    assert summary.skipped == {"unreadable": 1, "multiple_faces": 1, "no_face": 1}
    assert summary.per_label == {"ann": 2, "bob": 1}
    assert summary.ids == [0, 1, 2]
    assert len(seen) == 6
    lib = FeatureLibrary.load(tmp_path / "index", expected_dim=DIM, expected_fingerprint="fake-v1")
    assert (lib.ntotal, lib.index_type, lib.metric_type) == (3, "IVF", "L2")
    assert lib.label_counts() == {"ann": 2, "bob": 1}


def test_build_with_no_face_at_all_saves_nothing(tmp_path: Path) -> None:
    # given
    root = tmp_path / "data"
    face_png(root / "images" / "ann" / "0.png", faces=0)
    (root / "images" / "ann" / "1.jpg").write_bytes(b"")
    # when
    with pytest.raises(FeatureLibraryError, match=r"data: no face enrolled from 2 images \((no_face 1, unreadable 1|unreadable 1, no_face 1)\); nothing was saved"):
        build_index(FakeEngine(), root, tmp_path / "index")
    # then
    assert not (tmp_path / "index").exists()


def test_build_refuses_a_directory_with_other_files_before_embedding(tmp_path: Path) -> None:
    # given
    root = _gallery(tmp_path / "data", {"ann": 1})
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "thesis.pdf").write_bytes(b"%PDF")
    engine = FakeEngine()
    # when
    with pytest.raises(FeatureLibraryError, match="holds other files \\(e.g. thesis.pdf\\)"):
        build_index(engine, root, tmp_path / "index")
    # then
    assert engine.calls == 0


def test_append_continues_ids_and_keeps_the_old_vectors(tmp_path: Path) -> None:
    # given
    engine = FakeEngine()
    build_index(engine, _gallery(tmp_path / "first", {"ann": 2}), tmp_path / "index")
    # when
    summary = append_index(engine, _gallery(tmp_path / "more", {"bob": 2}, seed0=50), tmp_path / "index")
    # then
    assert summary.ids == [2, 3]
    lib = FeatureLibrary.load(tmp_path / "index")
    assert dict(lib.labels) == {0: "ann", 1: "ann", 2: "bob", 3: "bob"}


def _paddlex_style(index_dir: Path) -> None:
    info = yaml.safe_load((index_dir / "id_map.yaml").read_text())
    (index_dir / "id_map.yaml").write_text(yaml.safe_dump({k: info[k] for k in ("id_map", "index_type", "metric_type")}))


@pytest.mark.parametrize(
    ("engine", "prepare", "message"),
    [
        (FakeEngine("fake-v2"), None, "index made by model fake-v1, engine is model fake-v2: rebuild with `streamd gallery build`"),
        (FakeEngine("fake-v1", dim=4), None, "index holds 8-d vectors, engine gives 4-d"),
        (FakeEngine(), _paddlex_style, "index has no model fingerprint \\(built by PaddleX\\?\\)"),
    ],
)
def test_append_refuses_an_index_of_another_model_and_leaves_it_intact(tmp_path: Path, engine, prepare, message) -> None:
    # given
    build_index(FakeEngine(), _gallery(tmp_path / "first", {"ann": 2}), tmp_path / "index")
    if prepare:
        prepare(tmp_path / "index")
    before = {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()}
    # when
    with pytest.raises(FeatureLibraryError, match=message):
        append_index(engine, _gallery(tmp_path / "more", {"bob": 1}), tmp_path / "index")
    # then
    assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == before
    assert engine.calls == 0


def test_append_without_an_index(tmp_path: Path) -> None:
    with pytest.raises(FeatureLibraryError, match="no feature library to append to; create one with `streamd gallery build`"):
        append_index(FakeEngine(), _gallery(tmp_path / "more", {"bob": 1}), tmp_path / "index")


def test_remove_by_ids_and_by_label(tmp_path: Path) -> None:
    # given
    build_index(FakeEngine(), _gallery(tmp_path / "data", {"ann": 2, "bob": 2, "cy": 1}), tmp_path / "index")
    # when
    by_ids = remove_from_index(tmp_path / "index", ids=[0, 42])
    by_label = remove_from_index(tmp_path / "index", labels=["bob"])
    # then
    assert (by_ids.removed, by_ids.not_found, by_ids.remaining) == ((0,), (42,), 4)
    assert (by_label.removed, by_label.remaining) == ((2, 3), 2)
    assert dict(FeatureLibrary.load(tmp_path / "index").labels) == {1: "ann", 4: "cy"}


@pytest.mark.parametrize(
    ("index_type", "kwargs", "message"),
    [
        ("Flat", {"ids": [77, 78]}, "none of the ids \\(77, 78\\) is in the index; nothing was removed"),
        ("Flat", {"labels": ["zed"]}, "no vectors with label 'zed'; nothing was removed"),
        ("Flat", {}, "nothing to remove: give ids or a label"),
        ("HNSW32", {"ids": [0]}, "index: HNSW32 indexes do not support remove \\(as in PaddleX\\)"),
    ],
)
def test_remove_refusals_leave_the_index_intact(tmp_path: Path, index_type, kwargs, message) -> None:
    # given
    build_index(FakeEngine(), _gallery(tmp_path / "data", {"ann": 2}), tmp_path / "index", index_type=index_type)
    before = {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()}
    # when
    with pytest.raises(FeatureLibraryError, match=message):
        remove_from_index(tmp_path / "index", **kwargs)
    # then
    assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == before


def test_ids_file_takes_the_first_field_of_each_line(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("3 images/a.jpg\n\n# comment\n7\n")
    assert read_ids_file(tmp_path / "ids.txt") == [3, 7]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "ids.txt: ids file not found"),
        ("3\nseven\n", "ids.txt:2: 'seven' is not an integer id"),
        ("# nothing\n", "ids.txt: no ids in the file"),
    ],
)
def test_bad_ids_files(tmp_path: Path, content, message) -> None:
    if content is not None:
        (tmp_path / "ids.txt").write_text(content)
    with pytest.raises(FeatureLibraryError, match=message):
        read_ids_file(tmp_path / "ids.txt")

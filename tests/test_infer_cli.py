"""`streamd infer` with the real dlib engine and a real index built from real face photos."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from streamd.cli import cli, main
from streamd.faces.engine import FaceEngine
from streamd.images import read_image
from streamd.settings import EngineSettings, load_settings

PEOPLE = ("Al_Gore", "Alan_Greenspan", "Ai_Sugiyama")
PAIDLEX_BOX_KEYS = {"labels", "rec_scores", "det_score", "coordinate"}


@pytest.fixture(scope="module")
def engine(faces_dir: Path) -> FaceEngine:
    """The default (dlib) engine, loaded once: loading it takes seconds, the tests share it."""
    return FaceEngine.from_settings(load_settings().engine)


@pytest.fixture(autouse=True)
def _shared_engine(monkeypatch: pytest.MonkeyPatch, engine: FaceEngine) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMD_"):
            monkeypatch.delenv(key)
    default = EngineSettings()
    original = FaceEngine.from_settings.__func__  # type: ignore[attr-defined]

    def from_settings(cls: type[FaceEngine], settings: EngineSettings) -> FaceEngine:
        return engine if settings == default else original(cls, settings)

    monkeypatch.setattr(FaceEngine, "from_settings", classmethod(from_settings))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine, faces_dir: Path) -> Path:
    """An index of three people, two gallery photos each (_0001, _0002), built with the default engine."""
    from streamd.index.builder import build_index

    root = tmp_path_factory.mktemp("gallery")
    for person in PEOPLE:
        (root / "images" / person).mkdir(parents=True)
        for n in (1, 2):
            name = f"{person}_{n:04d}.jpg"
            shutil.copy(faces_dir / "identities" / person / name, root / "images" / person / name)
    index = root / "index"
    build_index(engine, root, index)
    return index


@pytest.fixture()
def probes(tmp_path: Path, faces_dir: Path) -> Path:
    """A directory with one photo of each person that is not in the gallery (_0003)."""
    folder = tmp_path / "probes"
    folder.mkdir()
    for person in PEOPLE:
        shutil.copy(faces_dir / "identities" / person / f"{person}_0003.jpg", folder / f"{person}_0003.jpg")
    return folder


def run(*args: str | Path) -> object:
    return CliRunner().invoke(cli, ["infer", *map(str, args)])


def test_an_image_prints_box_score_and_the_name(index_dir: Path, probes: Path) -> None:
    # when
    result = run(probes / "Al_Gore_0003.jpg", "--index-dir", index_dir, "--topk", "3")
    # then
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{probes / 'Al_Gore_0003.jpg'}: 1 face"
    assert lines[1].startswith("  face 1: box [") and " det " in lines[1]
    assert "-> Al_Gore 0." in lines[1] and "(top-3: Al_Gore" in lines[1]


def test_a_directory_gives_its_images_in_sorted_order(index_dir: Path, probes: Path) -> None:
    # given
    (probes / "notes.txt").write_text("not an image, and not listed")
    # when
    result = run(probes, "--index-dir", index_dir)
    # then
    assert result.exit_code == 0, result.output
    heads = [line.split(":")[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [str(probes / f"{p}_0003.jpg") for p in sorted(PEOPLE)]
    for person in PEOPLE:
        assert f"-> {person} 0." in result.stdout


def test_a_threshold_above_every_score_makes_the_face_unknown(index_dir: Path, probes: Path) -> None:
    # when
    result = run(probes / "Alan_Greenspan_0003.jpg", "--index-dir", index_dir, "--threshold", "0.999")
    # then
    assert result.exit_code == 0, result.output
    assert "-> Unknown (best score 0." in result.stdout and "< threshold 0.999)" in result.stdout
    assert "Alan_Greenspan" in result.stdout  # the top-k hits are still shown


def test_json_file_holds_paddlex_style_results(index_dir: Path, probes: Path, tmp_path: Path) -> None:
    # given
    out = tmp_path / "out" / "results.json"
    # when
    result = run(probes / "Ai_Sugiyama_0003.jpg", probes / "Al_Gore_0003.jpg", "--index-dir", index_dir,
                 "--json", out, "--threshold", "0.9", "--topk", "4")
    # then
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["input_path"] for r in data] == [str(probes / "Ai_Sugiyama_0003.jpg"), str(probes / "Al_Gore_0003.jpg")]
    for item, person in zip(data, ("Ai_Sugiyama", "Al_Gore")):
        (box,) = item["boxes"]
        assert PAIDLEX_BOX_KEYS <= set(box)
        assert box["labels"][0] == person and len(box["labels"]) == len(box["rec_scores"]) == 4
        assert box["rec_scores"] == sorted(box["rec_scores"], reverse=True)
        assert box["identity"] == person and box["reason"] == "known"
        x1, y1, x2, y2 = box["coordinate"]
        assert 0 <= x1 < x2 <= 250 and 0 <= y1 < y2 <= 250 and box["det_score"] > 0


def test_json_for_an_unknown_face_has_null_labels_like_paddlex(index_dir: Path, probes: Path, tmp_path: Path) -> None:
    # given
    out = tmp_path / "unknown.json"
    # when
    result = run(probes / "Al_Gore_0003.jpg", "--index-dir", index_dir, "--json", out, "--threshold", "0.999")
    # then
    assert result.exit_code == 0, result.output
    (box,) = json.loads(out.read_text())[0]["boxes"]
    assert (box["labels"], box["rec_scores"], box["identity"], box["reason"]) == (None, None, None, "below_threshold")
    assert box["topk"][0]["label"] == "Al_Gore"


def test_json_directory_gets_one_res_file_per_image(index_dir: Path, probes: Path, tmp_path: Path) -> None:
    # given
    out = tmp_path / "json-dir"
    # when
    result = run(probes, "--index-dir", index_dir, "--json", out)
    # then
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{p}_0003_res.json" for p in sorted(PEOPLE)]
    single = json.loads((out / "Al_Gore_0003_res.json").read_text())
    assert single["input_path"] == str(probes / "Al_Gore_0003.jpg") and single["boxes"][0]["labels"][0] == "Al_Gore"


def test_save_img_writes_annotated_copies(index_dir: Path, probes: Path, tmp_path: Path) -> None:
    # given
    out = tmp_path / "drawn"
    # when
    result = run(probes, "--index-dir", index_dir, "--save-img", out)
    # then
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{p}_0003_res.jpg" for p in sorted(PEOPLE)]
    original = read_image(probes / "Al_Gore_0003.jpg")
    drawn = read_image(out / "Al_Gore_0003_res.jpg")
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # a box and a label were drawn


BAD_INPUTS = [
    # (name, how to make it, the message a user reads)
    ("text file", lambda p: (p / "notes.jpg").write_text("hello"), "notes.jpg: not an image (unrecognised format)"),
    ("zero bytes", lambda p: (p / "empty.jpg").write_bytes(b""), "empty.jpg: empty file (0 bytes)"),
    ("missing file", lambda p: p / "missing.jpg", "missing.jpg: file not found"),
    ("directory without images", lambda p: (p / "nothing").mkdir(), "nothing: directory has no images"),
    ("broken video", lambda p: (p / "clip.mp4").write_bytes(b"\x00" * 64), "clip.mp4: not a readable video"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_a_bad_input_is_reported_and_the_run_goes_on(index_dir: Path, probes: Path, tmp_path: Path, make, message) -> None:
    # given
    make(tmp_path)
    bad = tmp_path / message.split(":")[0]
    # when
    result = run(bad, probes / "Al_Gore_0003.jpg", "--index-dir", index_dir)
    # then
    assert result.exit_code == 1
    assert f"error: {tmp_path}/{message}" in result.stderr
    assert "1 of 2 inputs failed" in result.stderr
    assert "-> Al_Gore 0." in result.stdout


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a directory; yields its base URL and the directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_http_url_is_fetched_and_a_missing_one_reported(index_dir: Path, faces_dir: Path, http_root, tmp_path: Path) -> None:
    # given
    base, root = http_root
    shutil.copy(faces_dir / "identities" / "Alan_Greenspan" / "Alan_Greenspan_0004.jpg", root / "ag.jpg")
    with_password = base.replace("http://", "http://user:s3cret@") + "/gone.jpg"
    out = tmp_path / "url.json"
    # when
    result = run(f"{base}/ag.jpg", with_password, "--index-dir", index_dir, "--json", out)
    # then
    assert result.exit_code == 1
    assert f"{base}/ag.jpg: 1 face" in result.stdout and "-> Alan_Greenspan 0." in result.stdout
    assert "/gone.jpg: HTTP 404" in result.stderr
    assert "s3cret" not in result.output  # a password in a URL is never printed
    assert json.loads(out.read_text())[0]["input_path"] == f"{base}/ag.jpg"


def _write_video(path: Path, image: np.ndarray, seconds: float, fps: int) -> None:
    import av

    h, w = (d - d % 2 for d in image.shape[:2])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_video_prints_a_line_per_sampled_frame_and_who_was_recognised(
    index_dir: Path, probes: Path, tmp_path: Path
) -> None:
    # given: 2 s at 10 fps of one person's photo, sampled at 2 fps
    image = cv2.copyMakeBorder(read_image(probes / "Ai_Sugiyama_0003.jpg"), 0, 6, 0, 70, cv2.BORDER_CONSTANT)
    video = tmp_path / "clip.mp4"
    _write_video(video, image, seconds=2.0, fps=10)
    out = tmp_path / "video.json"
    # when
    result = run(video, "--index-dir", index_dir, "--video-fps", "2", "--json", out)
    # then
    assert result.exit_code == 0, result.output
    frame_lines = [line for line in result.stdout.splitlines() if " frame " in line]
    assert [line.split(":")[0] for line in frame_lines] == [
        f"{video} frame 0 t=0.00s", f"{video} frame 5 t=0.50s", f"{video} frame 10 t=1.00s", f"{video} frame 15 t=1.50s"
    ]
    assert all("Ai_Sugiyama 0." in line for line in frame_lines)
    assert f"{video}: 4 frames sampled at 2 fps, 4 faces" in result.stdout
    assert "  recognised Ai_Sugiyama: 4 times, 0.0-1.5 s" in result.stdout
    data = json.loads(out.read_text())
    assert [(d["frame_index"], d["pts"]) for d in data] == [(0, 0.0), (5, 0.5), (10, 1.0), (15, 1.5)]


def test_a_missing_index_is_one_line_naming_the_directory(tmp_path: Path, probes: Path, capsys) -> None:
    # when
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(probes / "Al_Gore_0003.jpg"), "--index-dir", str(tmp_path / "no-index")])
    # then
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path / "no-index") in err and "\n" not in err

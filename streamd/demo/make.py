"""Write the demo files: a PaddleX-layout gallery, an H.264 video, its ground truth, the attribution.

Layout of the output directory (default ``./demo-output``)::

    gallery/images/<ID>/*.jpg   gallery/gallery.txt   the enrolled people (``path label`` lines)
    demo.mp4                    1280x720, 25 fps, H.264 yuv420p, 12 s
    ground_truth.json           who appears when, with face boxes per frame
    ATTRIBUTION.txt             which package each picture came from, and the licences
    downloads/                  the pip download cache (sdists and a wheel)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from streamd.demo import scene
from streamd.demo.sources import PackageFiles, attribution_text
from streamd.images import encode_jpeg

#: Bump when the scene or the layout changes, so that old demo output is rebuilt.
DEMO_VERSION = 1
GALLERY_MAX_SIDE = 1200
_STAMP = ".make_demo.json"


@dataclass(frozen=True)
class DemoFiles:
    """Paths of one demo output directory."""

    root: Path

    @property
    def gallery(self) -> Path:
        """The gallery data_root (holds images/ and gallery.txt)."""
        return self.root / "gallery"

    @property
    def video(self) -> Path:
        return self.root / "demo.mp4"

    @property
    def truth(self) -> Path:
        return self.root / "ground_truth.json"

    @property
    def attribution(self) -> Path:
        return self.root / "ATTRIBUTION.txt"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def index(self) -> Path:
        """Where the demo builds its feature library."""
        return self.root / "index"

    def complete(self) -> bool:
        """True when a finished make_demo of this DEMO_VERSION wrote this directory."""
        stamp = self.root / _STAMP
        try:
            version = json.loads(stamp.read_text()).get("version")
        except (OSError, ValueError):
            return False
        needed = (self.gallery / "gallery.txt", self.video, self.truth, self.attribution)
        return version == DEMO_VERSION and all(p.is_file() for p in needed)


def make_demo(
    out_dir: Path | str = "demo-output",
    *,
    download_dir: Path | str | None = None,
    force: bool = False,
    use_installed: bool = True,
    log: Callable[[str], None] = print,
) -> DemoFiles:
    """Build the demo gallery, video, ground truth and attribution into ``out_dir``.

    Skips the work when ``out_dir`` already holds a complete demo of this version (unless
    ``force``). Package archives are cached in ``download_dir`` (default ``out_dir/downloads``).
    Raises DemoDataUnavailable when a package cannot be fetched.
    """
    files = DemoFiles(Path(out_dir))
    if files.complete() and not force:
        log(f"demo data already in {files.root} (use --force to rebuild)")
        return files
    files.root.mkdir(parents=True, exist_ok=True)
    (files.root / _STAMP).unlink(missing_ok=True)
    packages = PackageFiles(Path(download_dir) if download_dir else files.downloads, use_installed=use_installed)
    packages.prefetch(scene.ALL_FILES)

    gallery_lines = _write_gallery(files.gallery, packages)
    log(f"gallery: {len(gallery_lines)} images of {sum(p.enrolled for p in scene.PEOPLE)} people in {files.gallery}")

    background = scene.brick_wall(cv2.cvtColor(_load(packages, scene.BRICK), cv2.COLOR_BGR2GRAY))
    sprites = {
        actor: scene.cut_head(
            _load(packages, actor.image), actor.face_box, mirror=actor.mirror, tilt=actor.tilt, gamma=actor.gamma
        )
        for actor in scene.ACTORS
    }
    demo_scene = scene.Scene(background, sprites)
    timeline = _write_video(files.video, demo_scene)
    log(f"video: {demo_scene.frame_count} frames, {demo_scene.frame_count / demo_scene.fps:.0f} s -> {files.video}")

    files.truth.write_text(json.dumps(_truth(demo_scene, timeline, gallery_lines), indent=1) + "\n")
    files.attribution.write_text(attribution_text(packages))
    (files.root / _STAMP).write_text(json.dumps({"version": DEMO_VERSION}) + "\n")
    log(f"ground truth: {files.truth}; attribution: {files.attribution}")
    return files


def _load(packages: PackageFiles, file: scene.PackageFile) -> np.ndarray:
    return scene.load_image(packages.read(file), file)


def _write_gallery(root: Path, packages: PackageFiles) -> list[str]:
    """Gallery images (longer side capped so that enrolment stays quick) and gallery.txt."""
    if root.exists():
        shutil.rmtree(root)
    lines = []
    for person in scene.PEOPLE:
        for file in person.gallery:
            image = _load(packages, file)
            side = max(image.shape[:2])
            if side > GALLERY_MAX_SIDE:
                f = GALLERY_MAX_SIDE / side
                image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            rel = f"images/{person.label}/{Path(file.filename).stem}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(encode_jpeg(image, quality=95))
            lines.append(f"{rel} {person.label}")
    (root / "gallery.txt").write_text("\n".join(lines) + "\n")
    return lines


def _write_video(path: Path, demo_scene: scene.Scene) -> list[dict]:
    """Encode the scene as H.264 (yuv420p) with PyAV; returns the per-frame ground truth."""
    import av

    tmp = path.with_name(path.name + ".partial")
    timeline = []
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(demo_scene.fps))
        stream.width, stream.height, stream.pix_fmt = demo_scene.width, demo_scene.height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for index, image, faces in demo_scene.frames():
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, demo_scene.fps)
            container.mux(stream.encode(frame))
            timeline.append({
                "index": index,
                "t": round(index / demo_scene.fps, 3),
                "faces": [{"label": f.label, "box": list(f.box), "visible": f.visible} for f in faces],
            })
        container.mux(stream.encode(None))
    tmp.replace(path)
    return timeline


def _truth(demo_scene: scene.Scene, timeline: list[dict], gallery_lines: list[str]) -> dict:
    """ground_truth.json: the people, when each is fully in view, and the per-frame face boxes."""
    people = []
    for person in scene.PEOPLE:
        frames = [f["index"] for f in timeline if any(x["label"] == person.label and x["visible"] >= 1.0
                                                       for x in f["faces"])]
        actor = next(a for a in scene.ACTORS if a.person is person)
        people.append({
            "label": person.label,
            "enrolled": person.enrolled,
            "gallery": [ln.split(" ", 1)[0] for ln in gallery_lines if ln.endswith(" " + person.label)],
            "video_source": f"{actor.image.package.requirement}: {actor.image.member}"
            + (" (mirrored)" if actor.mirror else ""),
            "fully_visible": _intervals(frames, demo_scene.fps),
        })
    return {
        "video": "demo.mp4",
        "width": demo_scene.width,
        "height": demo_scene.height,
        "fps": demo_scene.fps,
        "frame_count": demo_scene.frame_count,
        "people": people,
        "frames": timeline,
    }


def _intervals(frames: list[int], fps: int) -> list[dict]:
    """Runs of consecutive frame numbers as {start_s, end_s, first_frame, last_frame}."""
    runs: list[list[int]] = []
    for index in frames:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return [
        {"start_s": round(a / fps, 2), "end_s": round(b / fps, 2), "first_frame": a, "last_frame": b}
        for a, b in runs
    ]

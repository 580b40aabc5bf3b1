"""Test and benchmark video made from real faces: enrolled and never-enrolled people over a wall.

A *cast* is drawn from a face folder laid out like ``../shared/data/faces/identities`` (one
folder of photos per person): enrolled people give some photos to the gallery and a different
one to the video; never-enrolled people appear in the video only. A *scene* moves their heads
(cut from the photos with :func:`streamd.demo.scene.cut_head`) over a brick wall in up to three
lanes, so that one to three faces are in view at a time; each appearance steps in from the
bottom edge, drifts and turns a little, and steps out. The video is H.264 with a fixed keyframe
interval; the ground truth (who is where in every frame) comes with it.

Nothing here is copied into the repository: clips and galleries are written where the caller
says (a test's tmp_path, the benchmark's work directory).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamd.demo.scene import Actor, Keyframe, Person, Scene, Sprite, brick_wall, cut_head
from streamd.images import read_image
from streamd.types import Face

#: Where the wall texture sits in a face folder's sibling ``negatives`` (a photo with no face).
BRICK = Path("negatives/skimage/brick.png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

Detect = Callable[[np.ndarray], Sequence[Face]]


@dataclass(frozen=True)
class Role:
    """One person of a cast: the photo shown in the video and, when enrolled, the gallery photos."""

    label: str
    enrolled: bool
    video_image: Path
    gallery: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Appearance:
    """When and where a person is in the video (seconds), in which lane."""

    label: str
    enrolled: bool
    start_s: float
    end_s: float
    lane: int


@dataclass(frozen=True)
class SceneClip:
    """A rendered clip: the file, its format, who appears when, and per frame who is where."""

    path: Path
    width: int
    height: int
    fps: int
    gop: int
    frames: int
    appearances: tuple[Appearance, ...]
    #: Per frame: (label, box, visible share of the box) of every face in it.
    truth: tuple[tuple[tuple[str, tuple[float, float, float, float], float], ...], ...]

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def first_visible(self, appearance: Appearance, min_visible: float = 0.9) -> float | None:
        """Video time (s) of the first frame where the appearance's face is at least ``min_visible`` in view."""
        first = int(np.ceil(appearance.start_s * self.fps))
        last = min(self.frames - 1, int(appearance.end_s * self.fps))
        for index in range(first, last + 1):
            if any(lbl == appearance.label and vis >= min_visible for lbl, _, vis in self.truth[index]):
                return index / self.fps
        return None

    def faces_at(self, t: float) -> tuple[tuple[str, tuple[float, float, float, float], float], ...]:
        """The faces of the frame shown at video time ``t`` (wrapping around for looped playback)."""
        return self.truth[int(round(t * self.fps)) % self.frames]


# --------------------------------------------------------------------------- casting


def person_images(folder: Path) -> list[Path]:
    """A person's photos, by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def pick_cast(
    identities: Path, *, enrolled: int, strangers: int, gallery_images: int = 4, seed: int = 0
) -> list[Role]:
    """``enrolled`` people with ``gallery_images`` gallery photos and one more for the video, and
    ``strangers`` other people with a video photo only, drawn at random (``seed``) from ``identities``.
    """
    folders = sorted(p for p in identities.iterdir() if p.is_dir())
    rng = random.Random(seed)
    rng.shuffle(folders)
    roles: list[Role] = []
    for folder in folders:
        images = person_images(folder)
        want_enrolled = sum(r.enrolled for r in roles) < enrolled
        if want_enrolled and len(images) > gallery_images:
            # The video photo is the last one, so the gallery never holds the picture shown.
            roles.append(Role(folder.name, True, images[-1], tuple(images[:gallery_images])))
        elif not want_enrolled and sum(not r.enrolled for r in roles) < strangers and images:
            roles.append(Role(folder.name, False, images[0]))
        if len(roles) == enrolled + strangers:
            return roles
    raise ValueError(f"{identities}: not enough people for {enrolled} enrolled and {strangers} never-enrolled")


def write_gallery(roles: Sequence[Role], data_root: Path) -> Path:
    """Copy the enrolled people's gallery photos to ``data_root/images/<label>/`` (PaddleX layout)."""
    for role in roles:
        if not role.enrolled:
            continue
        folder = data_root / "images" / role.label
        folder.mkdir(parents=True, exist_ok=True)
        for image in role.gallery:
            shutil.copyfile(image, folder / image.name)
    return data_root


# --------------------------------------------------------------------------- the scene


def plan(
    roles: Sequence[Role], *, seconds: float, lanes: int = 3, stay_s: float = 4.0, gap_s: float = 0.8, seed: int = 0
) -> list[Appearance]:
    """Appearances in ``lanes`` lanes, one after the other in each lane, cycling through the cast.

    Lanes start staggered, so one to ``lanes`` faces are in view at a time.
    """
    rng = random.Random(seed)
    order = list(roles)
    rng.shuffle(order)
    out: list[Appearance] = []
    k = 0
    for lane in range(lanes):
        t = 0.3 + lane * (stay_s + gap_s) / lanes
        while t + stay_s <= seconds:
            role = order[k % len(order)]
            k += 1
            out.append(Appearance(role.label, role.enrolled, round(t, 2), round(t + stay_s, 2), lane))
            t += stay_s + gap_s * rng.uniform(0.7, 1.3)
    return sorted(out, key=lambda a: a.start_s)


def _actor(a: Appearance, role: Role, box: tuple[int, int, int, int], size: tuple[int, int], rng: random.Random,
           lanes: int) -> Actor:
    width, height = size
    face_w = rng.uniform(110.0, 150.0) * height / 720.0
    lane_w = width / lanes
    # The face centre stays inside its lane (within 0.35 lane widths of the middle).
    cx = lane_w * (a.lane + 0.5) + rng.uniform(-0.15, 0.15) * lane_w
    cy = height * rng.uniform(0.38, 0.5)
    drift = rng.uniform(-0.2, 0.2) * lane_w
    below = height + face_w * 1.6  # out of view under the bottom edge
    step = 0.5  # seconds to step in or out
    path = (
        Keyframe(a.start_s, cx, below, face_w),
        Keyframe(a.start_s + step, cx, cy, face_w),
        Keyframe(a.end_s - step, cx + drift, cy + rng.uniform(-20, 20), face_w * rng.uniform(0.95, 1.15)),
        Keyframe(a.end_s, cx + drift, below, face_w),
    )
    # Actor.image names where the head was cut from; here a photo of the face folder.
    return Actor(Person(a.label, a.enrolled), role.video_image, box, rng.random() < 0.5, path,  # type: ignore[arg-type]
                 tilt=rng.uniform(-6, 6), gamma=rng.uniform(0.85, 1.15))


def render_scene(
    roles: Sequence[Role],
    path: Path,
    detect: Detect,
    *,
    wall: np.ndarray,
    seconds: float = 30.0,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    gop: int = 25,
    lanes: int = 3,
    seed: int = 0,
    crf: int = 23,
    appearances: Sequence[Appearance] | None = None,
) -> SceneClip:
    """Render the cast over ``wall`` (BGR, any size: scaled to a wall) and encode it to ``path`` (H.264).

    ``detect`` finds the face to cut from each video photo (the largest one). A keyframe comes
    every ``gop`` frames exactly, as cameras do. ``appearances`` replaces the :func:`plan`
    (e.g. one person per lane for the whole clip, so that a lane tells who is there).
    """
    import av

    rng = random.Random(seed)
    by_label = {r.label: r for r in roles}
    if appearances is None:
        appearances = plan(roles, seconds=seconds, lanes=lanes, seed=seed)
    appearances = sorted(appearances, key=lambda a: a.start_s)
    sprites: dict[Actor, Sprite] = {}
    heads: dict[str, tuple[np.ndarray, tuple[int, int, int, int]]] = {}
    actors = []
    for a in appearances:
        role = by_label[a.label]
        if a.label not in heads:
            image = read_image(role.video_image)
            faces = list(detect(image))
            if not faces:
                raise ValueError(f"{role.video_image}: no face found to put in the scene")
            f = max(faces, key=lambda x: x.area)
            heads[a.label] = (image, tuple(int(round(v)) for v in f.box))  # type: ignore[misc]
        image, box = heads[a.label]
        actor = _actor(a, role, box, size, rng, lanes)
        sprites[actor] = cut_head(image, box, mirror=actor.mirror, tilt=actor.tilt, gamma=actor.gamma)
        actors.append(actor)
    grey = cv2.cvtColor(wall, cv2.COLOR_BGR2GRAY) if wall.ndim == 3 else wall
    scene = Scene(brick_wall(grey, *size), sprites, tuple(actors), fps=fps, duration_s=seconds)
    truth = []
    partial = path.with_name("partial-" + path.name)
    with av.open(str(partial), "w", format="mp4") as out:
        stream = out.add_stream(
            "libx264",
            rate=fps,
            options={"preset": "veryfast", "crf": str(crf),
                     "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"},
        )
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index, image, faces in scene.frames():
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
            truth.append(tuple((f.label, f.box, f.visible) for f in faces))
        out.mux(stream.encode(None))
    partial.replace(path)
    return SceneClip(path, size[0], size[1], fps, gop, scene.frame_count, tuple(appearances), tuple(truth))


def save_truth(clip: SceneClip, path: Path) -> None:
    """The clip's appearances and per-frame truth as JSON (for caching and inspection)."""
    data = {k: v for k, v in asdict(clip).items() if k != "path"}
    # Relative when the clip sits beside the truth file, so that the pair can be moved together.
    data["path"] = clip.path.name if clip.path.parent.resolve() == path.parent.resolve() else str(clip.path)
    path.write_text(json.dumps(data))


def load_truth(path: Path) -> SceneClip:
    """A clip saved by :func:`save_truth`."""
    data = json.loads(path.read_text())
    return SceneClip(
        path=path.parent / data["path"],
        width=data["width"],
        height=data["height"],
        fps=data["fps"],
        gop=data["gop"],
        frames=data["frames"],
        appearances=tuple(Appearance(**a) for a in data["appearances"]),
        truth=tuple(tuple((lbl, tuple(box), vis) for lbl, box, vis in frame) for frame in data["truth"]),
    )


def wall_image(faces_dir: Path) -> np.ndarray:
    """The brick texture from a face data folder (``negatives/skimage/brick.png``)."""
    return read_image(faces_dir / BRICK)

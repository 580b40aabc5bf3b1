"""Test and benchmark video made from real faces: enrolled and never-enrolled people over a wall.

A *cast* is drawn from a face folder laid out like ``../shared/data/faces/identities`` (one
folder of photos per person): enrolled people give some photos to the gallery and a different
one to the video; never-enrolled people appear in the video only. A *scene* moves their heads
(cut from the photos with :func:`streamd.demo.scene.cut_head`) over a brick wall in up to three
lanes, so that one to three faces are in view at a time; each appearance steps in from the
bottom edge, drifts and turns a little, and steps out. The video is H.264 with a fixed keyframe
interval; the ground truth (who is where in every frame) comes with it.

*Scene families* (:data:`FAMILIES`, for ``streamd bench scenes``) are made of :class:`Walk` values:
people crossing the frame sideways at a steady pace, each with a path of its own, so that the
cases where a tracker can carry a name to another person are in the video on purpose:

- ``walks``: two lanes of back-to-back walkers, a different probe photo on every walk;
- ``handoff``: a walker leaves at an edge and the next one enters at that spot within one sample
  interval, back and forth, at several face sizes;
- ``crossing``: two people pass each other in one lane, the nearer (larger) face over the other;
- ``return``: a person walks out at an edge and comes back through it 1-3 s later.

Their casts come from one half of the identities (:mod:`streamd.eval.split`, :func:`pick_people`):
enrolled people give two photos to the gallery and walk with the others.

Every family has a *difficulty* (:data:`DIFFICULTIES`). ``normal`` is the plan as it was first
made: faces 60-150 px wide, even light, steady pace, frontal heads, crf 23, random strangers.
``hard`` is what a camera in a corridor sees on a bad day: some faces near the quality gate's
minimum width, dim and uneven light with low contrast, fast walkers smeared by motion blur, heads
turned sideways (a perspective squash of the head, :func:`turn_head`), stronger compression,
hand-offs where the next walker enters before or after the last one left the same edge within one
sample interval, and never-enrolled people who look like enrolled ones (:func:`pick_lookalikes`:
the people of the half whose photos the benchmarked engine finds closest to the gallery).

Nothing here is copied into the repository: clips and galleries are written where the caller
says (a test's tmp_path, the benchmark's work directory).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamd.demo.scene import Actor, Keyframe, Person, Scene, Sprite, TruthFace, brick_wall, cut_head
from streamd.eval.split import Half, identity_folders, identity_of, select_people
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
    #: Photos the video may show (never gallery photos); scene families use one per walk.
    probes: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Appearance:
    """When and where a person is in the video (seconds), in which lane."""

    label: str
    enrolled: bool
    start_s: float
    end_s: float
    lane: int
    #: The photo the face was cut from, when the appearance has one of its own (scene families).
    image: str | None = None


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
    identities: Path, *, enrolled: int, strangers: int, gallery_images: int = 4, seed: int = 0, half: Half = "all"
) -> list[Role]:
    """``enrolled`` people with ``gallery_images`` gallery photos and one more for the video, and
    ``strangers`` other people with a video photo only, drawn at random (``seed``) from ``identities``.

    ``half`` draws them from one half of the split (:mod:`streamd.eval.split`), with one folder per
    person; "all" draws from every folder, as before the split existed.
    """
    folders = sorted(p for p in identities.iterdir() if p.is_dir())
    if half != "all":
        # One folder per person: the other folder of a same-person pair would be a "stranger" who is enrolled.
        folders = [p for p in identity_folders(identities, half) if identity_of(p.name) == p.name]
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
    truth = _encode(scene, path, size=size, fps=fps, gop=gop, crf=crf)
    return SceneClip(path, size[0], size[1], fps, gop, scene.frame_count, tuple(appearances), tuple(truth))


def _encode(
    scene: Scene, path: Path, *, size: tuple[int, int], fps: int, gop: int, crf: int, occlusion: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[tuple[str, tuple[float, float, float, float], float], ...]]:
    """Encode ``scene`` to ``path`` (H.264, a keyframe every ``gop`` frames); its per-frame truth.

    With ``occlusion``, a face's visible share also leaves out what the heads drawn after it
    cover (:func:`unhidden_share`). ``progress`` is told each frame written.
    """
    import av

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
            if occlusion:
                boxes = [f.box for f in faces]
                truth.append(tuple((f.label, f.box, unhidden_share(f.box, boxes[k + 1:], size))
                                   for k, f in enumerate(faces)))
            else:
                truth.append(tuple((f.label, f.box, f.visible) for f in faces))
            if progress is not None:
                progress(1)
        out.mux(stream.encode(None))
    partial.replace(path)
    return truth


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


# --------------------------------------------------------------------------- scene families

#: The scene families of ``streamd bench scenes`` (see the module docstring).
FAMILIES: tuple[str, ...] = ("walks", "handoff", "crossing", "return")
#: Face widths (pixels, at 720 lines) of the hand-off lanes, the first used first.
HANDOFF_SIZES: tuple[float, ...] = (90.0, 130.0, 60.0)
#: The hard variant's hand-off lanes: one of them just above the quality gate's 40 px minimum.
HARD_HANDOFF_SIZES: tuple[float, ...] = (90.0, 130.0, 48.0)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Difficulty:
    """How hard a family's clip is made (see the module docstring); widths are pixels at 720 lines.

    The defaults are the ``normal`` plan; a plan draws the extra random values of a field only when
    it differs from its default, so that a normal plan is the same walk for walk as before
    difficulties existed (and its cached clips stay valid).
    """

    name: str = "normal"
    #: Share of walkers whose face is ``small_px`` wide (near the quality gate's ``min_face_px``).
    small_share: float = 0.0
    small_px: tuple[float, float] = (42.0, 60.0)
    #: Share of walkers who cross ``fast_pace`` times faster than the others.
    fast_share: float = 0.0
    fast_pace: float = 1.6
    #: Exposure time of the camera (s): a fast walker's face is smeared over its speed times this.
    shutter_s: float = 0.0
    #: Exposure of a head (gamma > 1 darker) and its contrast around its mean (< 1 flatter).
    gamma: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (1.0, 1.0)
    #: Largest head roll and head turn (yaw, imitated by :func:`turn_head`), degrees.
    tilt: float = 6.0
    yaw: float = 0.0
    #: Share of walkers with a turned head (up to ``yaw``).
    yaw_share: float = 0.0
    #: Gain of the frame's darkest part under the uneven light (1: even light everywhere).
    light_floor: float = 1.0
    crf: int = 23
    #: Earliest entry of a hand-off's next walker, in sample intervals after the last one left (< 0: before).
    handoff_from: float = 0.0
    handoff_sizes: tuple[float, ...] = HANDOFF_SIZES
    #: Share of the never-enrolled slots of the cast given to look-alikes (:func:`pick_lookalikes`).
    lookalike_share: float = 0.0
    #: Whether a returning person comes back with another photo and another look.
    return_changed: bool = False


NORMAL = Difficulty()
HARD = Difficulty(
    name="hard", small_share=0.3, fast_share=0.3, shutter_s=1 / 60, gamma=(1.2, 1.9), contrast=(0.55, 0.85),
    tilt=12.0, yaw=30.0, yaw_share=0.5, light_floor=0.45, crf=32, handoff_from=-1.0,
    handoff_sizes=HARD_HANDOFF_SIZES, lookalike_share=0.75, return_changed=True,
)
#: The difficulties of ``streamd bench scenes --difficulty``.
DIFFICULTIES: dict[str, Difficulty] = {d.name: d for d in (NORMAL, HARD)}


@dataclass(frozen=True)
class Walk:
    """One appearance with a path of its own: who, from which photo, where the face is when.

    ``path`` has a keyframe on every frame (see :func:`glide`), so the face moves at the pace the
    path says rather than easing in and out at each keyframe as :class:`~streamd.demo.scene.Actor`
    does between keyframes.
    """

    label: str
    enrolled: bool
    lane: int
    image: Path
    path: tuple[Keyframe, ...]
    mirror: bool = False
    tilt: float = 0.0
    gamma: float = 1.0
    #: Head turn in degrees (:func:`turn_head`), contrast of the head, motion blur length in frame pixels.
    yaw: float = 0.0
    contrast: float = 1.0
    blur_px: float = 0.0

    @property
    def start_s(self) -> float:
        return self.path[0].t

    @property
    def end_s(self) -> float:
        return self.path[-1].t

    @property
    def face_w(self) -> float:
        """The face's largest width on the path (larger faces are nearer: drawn over smaller ones)."""
        return max(k.face_w for k in self.path)

    def appearance(self, image: Path | None = None) -> Appearance:
        """The appearance this walk makes (``image``: the photo actually shown, if another one)."""
        return Appearance(self.label, self.enrolled, round(self.start_s, 3), round(self.end_s, 3), self.lane,
                          image=str(image or self.image))


def pick_people(
    identities: Path, count: int, *, half: Half = "report", stranger_share: float = 0.25, gallery_images: int = 2,
    seed: int = 0,
) -> list[Role]:
    """``count`` people of ``half`` of ``identities`` (:mod:`streamd.eval.split`), drawn at random (``seed``).

    About ``stranger_share`` of them are never enrolled (every photo a probe); the others give
    their first ``gallery_images`` photos to the gallery and walk with the rest (:attr:`Role.probes`).
    Same-person folders are one person, under their identity's name.
    """
    people = {p.name: person_images(p) for p in sorted(Path(identities).iterdir()) if p.is_dir()}
    chosen = select_people(people, half)
    names = sorted(chosen)
    random.Random(seed).shuffle(names)
    strangers = int(round(count * stranger_share))
    enrolled = count - strangers
    roles: list[Role] = []
    for name in names:
        images = chosen[name]
        if sum(r.enrolled for r in roles) < enrolled:
            if len(images) > gallery_images:
                probes = tuple(images[gallery_images:])
                roles.append(Role(name, True, probes[0], tuple(images[:gallery_images]), probes))
        elif images:
            roles.append(Role(name, False, images[0], (), tuple(images)))
        if len(roles) == count:
            # Enrolled and never-enrolled people mixed, so that a plan's order does not group them.
            random.Random(seed + 1).shuffle(roles)
            return roles
    raise ValueError(f"{identities}: the {half} half has too few people for {enrolled} enrolled and "
                     f"{strangers} never-enrolled")


#: A photo's L2-normalised feature with the benchmarked engine, or None when it finds no usable face.
Embed = Callable[[Path], "np.ndarray | None"]


@dataclass(frozen=True)
class Stranger:
    """A never-enrolled person of a cast and how close they come to the gallery.

    ``similarity`` is the best cosine similarity of any of their photos to any gallery photo
    (None: none of their photos gave a feature), ``closest`` the enrolled person it was with, and
    ``lookalike`` whether they were chosen for it rather than at random.
    """

    label: str
    similarity: float | None
    closest: str | None
    lookalike: bool


def choose_strangers(
    candidates: Mapping[str, np.ndarray], gallery: np.ndarray, gallery_labels: Sequence[str], count: int, *,
    lookalike_share: float, seed: int = 0,
) -> list[Stranger]:
    """``count`` never-enrolled people out of ``candidates`` (name -> their photos' features, n x d):
    ``round(count * lookalike_share)`` of them the closest to some enrolled person (rows of
    ``gallery``, L2-normalised, labelled ``gallery_labels``) and the rest drawn at random (``seed``)
    from the other candidates, so that some strangers are ordinary people. Closest first, then the
    random ones. A candidate with no features is never a look-alike but may be drawn at random."""
    if count > len(candidates):
        raise ValueError(f"{count} strangers wanted but only {len(candidates)} candidates")
    scored: list[Stranger] = []
    for name in sorted(candidates):
        vectors = np.asarray(candidates[name], dtype=np.float32).reshape(-1, gallery.shape[1])
        if len(vectors) == 0 or len(gallery) == 0:
            scored.append(Stranger(name, None, None, False))
            continue
        sims = vectors @ gallery.T
        row, col = np.unravel_index(int(np.argmax(sims)), sims.shape)
        scored.append(Stranger(name, round(float(sims[row, col]), 4), gallery_labels[col], False))
    ranked = sorted((c for c in scored if c.similarity is not None), key=lambda c: (-c.similarity, c.label))
    wanted = min(len(ranked), int(round(count * lookalike_share)))
    chosen = [replace(c, lookalike=True) for c in ranked[:wanted]]
    taken = {c.label for c in chosen}
    rest = [c for c in scored if c.label not in taken]
    random.Random(seed).shuffle(rest)
    return chosen + rest[: count - wanted]


def pick_lookalike_people(
    identities: Path, count: int, embed: Embed, *, half: Half = "report", stranger_share: float = 0.25,
    gallery_images: int = 2, seed: int = 0, lookalike_share: float = 0.75, photos: int = 4,
) -> tuple[list[Role], list[Stranger]]:
    """A cast like :func:`pick_people`'s (the same enrolled people), whose never-enrolled people are
    mostly look-alikes (:func:`choose_strangers`): every other person of ``half`` is a candidate,
    their first ``photos`` photos embedded with ``embed``, as are the enrolled people's gallery
    photos. A stranger's probe photos start with the ones closest to the gallery."""
    people = {p.name: person_images(p) for p in sorted(Path(identities).iterdir()) if p.is_dir()}
    chosen = select_people(people, half)
    names = sorted(chosen)
    random.Random(seed).shuffle(names)
    strangers = int(round(count * stranger_share))
    enrolled = [n for n in names if len(chosen[n]) > gallery_images][: count - strangers]
    if len(enrolled) < count - strangers:
        raise ValueError(f"{identities}: the {half} half has too few people for {count - strangers} enrolled")
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    for name in enrolled:
        for photo in chosen[name][:gallery_images]:
            if (v := embed(photo)) is not None:
                vectors.append(v)
                labels.append(name)
    gallery = np.stack(vectors).astype(np.float32) if vectors else np.empty((0, 1), np.float32)
    dim = gallery.shape[1]
    features: dict[str, np.ndarray] = {}
    shown: dict[str, list[tuple[float, Path]]] = {}
    for name in names:
        if name in enrolled or not chosen[name]:
            continue
        rows = []
        for photo in chosen[name][:photos]:
            if (v := embed(photo)) is not None:
                rows.append(v)
                closeness = float(np.max(gallery @ v)) if len(gallery) else 0.0
                shown.setdefault(name, []).append((closeness, photo))
        features[name] = np.stack(rows).astype(np.float32) if rows else np.empty((0, dim), np.float32)
    picked = choose_strangers(features, gallery, labels, strangers, lookalike_share=lookalike_share, seed=seed)
    roles = []
    for name in enrolled:
        images = chosen[name]
        probes = tuple(images[gallery_images:])
        roles.append(Role(name, True, probes[0], tuple(images[:gallery_images]), probes))
    for stranger in picked:
        first = [photo for _, photo in sorted(shown.get(stranger.label, []), key=lambda x: -x[0])]
        probes = tuple(first + [p for p in chosen[stranger.label] if p not in first])
        roles.append(Role(stranger.label, False, probes[0], (), probes))
    # Enrolled and never-enrolled people mixed, so that a plan's order does not group them.
    random.Random(seed + 1).shuffle(roles)
    return roles, picked


class _Casting:
    """Deals people in a shuffled order (cycling) and, per person, their probe photos in turn."""

    def __init__(self, roles: Sequence[Role], rng: random.Random) -> None:
        self.order = list(roles)
        rng.shuffle(self.order)
        self.k = 0
        self.photo: dict[str, int] = {}

    def next(self) -> tuple[Role, Path]:
        role = self.order[self.k % len(self.order)]
        self.k += 1
        return role, self.photo_of(role)

    def photo_of(self, role: Role) -> Path:
        probes = role.probes or (role.video_image,)
        n = self.photo.get(role.label, 0)
        self.photo[role.label] = n + 1
        return probes[n % len(probes)]


def glide(
    waypoints: Sequence[tuple[float, float, float, float]], fps: int, *, bob: float = 0.0, bob_hz: float = 1.8,
    phase: float = 0.0,
) -> tuple[Keyframe, ...]:
    """A keyframe on every frame from the first waypoint to the last, straight between waypoints.

    ``waypoints`` are (t, cx, cy, face_w), their times rounded to frames; ``bob`` moves the face
    up and down by that share of its width at ``bob_hz`` (the steps of a walk).
    """
    frames = [int(round(t * fps)) for t, *_ in waypoints]
    out: list[Keyframe] = []
    for (f0, a), (f1, b) in zip(zip(frames, waypoints), zip(frames[1:], waypoints[1:])):
        span = max(1, f1 - f0)
        for f in range(f0 if not out else f0 + 1, f1 + 1):
            u = (f - f0) / span
            t = f / fps
            w = a[3] + (b[3] - a[3]) * u
            cy = a[2] + (b[2] - a[2]) * u + bob * w * np.sin(2 * np.pi * bob_hz * t + phase)
            out.append(Keyframe(t, a[1] + (b[1] - a[1]) * u, float(cy), w))
    return tuple(out)


def _look(rng: random.Random, difficulty: Difficulty = NORMAL) -> dict[str, float | bool]:
    """How a photo is changed for the video: mirrored or not, a head roll, an exposure; with a harder
    ``difficulty`` also a contrast and, for some walkers, a head turn."""
    d = difficulty
    look: dict[str, float | bool] = {"mirror": rng.random() < 0.5, "tilt": rng.uniform(-d.tilt, d.tilt),
                                     "gamma": rng.uniform(*d.gamma)}
    if d.contrast != NORMAL.contrast:
        look["contrast"] = rng.uniform(*d.contrast)
    if d.yaw_share and rng.random() < d.yaw_share:
        look["yaw"] = rng.choice((-1, 1)) * rng.uniform(0.4 * d.yaw, d.yaw)
    return look


def _size_and_pace(rng: random.Random, difficulty: Difficulty, face_w: float, duration: float,
                   height: int) -> tuple[float, float, bool]:
    """A walker's face width and crossing time under ``difficulty``: some small, some fast (and whether fast).

    Draws nothing for the normal difficulty (its plans stay as they were)."""
    d = difficulty
    if d.small_share and rng.random() < d.small_share:
        face_w = rng.uniform(*d.small_px) * height / 720.0
    fast = bool(d.fast_share) and rng.random() < d.fast_share
    return face_w, duration / d.fast_pace if fast else duration, fast


def _blur(difficulty: Difficulty, fast: bool, width: int, face_w: float, duration: float) -> dict[str, float]:
    """The motion blur of a walker crossing the frame (``width`` plus its face) in ``duration`` s."""
    if not fast or not difficulty.shutter_s:
        return {}
    return {"blur_px": round((width + 2 * _out(face_w)) / duration * difficulty.shutter_s, 2)}


def _out(face_w: float) -> float:
    """How far beyond a side edge a face's centre must be for its face box to be out of view."""
    return 0.5 * face_w + 1.0


def walks_plan(
    roles: Sequence[Role], *, seconds: float = 90.0, size: tuple[int, int] = (1280, 720), fps: int = 25,
    lanes: int = 2, seed: int = 0, difficulty: Difficulty = NORMAL,
) -> list[Walk]:
    """Back-to-back walks across the frame in ``lanes`` lanes, a probe photo per walk.

    Each walk takes 4-6 s from one side edge to the other (either way); the next walker of a lane
    starts 0.2-1.0 s after the previous one left. About 30 walks in 90 s with two lanes. A harder
    ``difficulty`` makes some faces small and some walkers fast (and blurred).
    """
    width, height = size
    rng = random.Random(seed)
    cast = _Casting(roles, rng)
    walks: list[Walk] = []
    for lane in range(lanes):
        y = height * (0.3 + 0.4 * lane / max(1, lanes - 1)) if lanes > 1 else height * 0.45
        t = 0.2 + 1.7 * lane
        while True:
            w = rng.uniform(80.0, 130.0) * height / 720.0
            duration = rng.uniform(4.0, 6.0)
            w, duration, fast = _size_and_pace(rng, difficulty, w, duration, height)
            if t + duration > seconds - 0.2:
                break
            role, photo = cast.next()
            x0, x1 = -_out(w), width + _out(w)
            if rng.random() < 0.5:
                x0, x1 = x1, x0
            cy = y + rng.uniform(-0.03, 0.03) * height
            path = glide([(t, x0, cy, w), (t + duration, x1, cy + rng.uniform(-15, 15), w * rng.uniform(0.95, 1.05))],
                         fps, bob=0.03, phase=rng.uniform(0, 6.3))
            walks.append(Walk(role.label, role.enrolled, lane, photo, path,  # type: ignore[arg-type]
                              **_look(rng, difficulty), **_blur(difficulty, fast, width, w, duration)))
            t = path[-1].t + rng.uniform(0.2, 1.0)
    return sorted(walks, key=lambda w: w.start_s)


def handoff_plan(
    roles: Sequence[Role], *, people: int = 18, sizes: Sequence[float] | None = None,
    size: tuple[int, int] = (1280, 720), fps: int = 25, sample_fps: float = 5.0, seed: int = 0,
    difficulty: Difficulty = NORMAL,
) -> list[Walk]:
    """Chains of walkers, one lane per face size: each walker leaves at a side edge and the next one
    enters at that spot, walking back, less than one sample interval (``1 / sample_fps``) after the
    face before it left the frame.

    ``people`` walkers are dealt over the lanes (one lane per two walkers at most, up to one per
    size, in the order of ``sizes``; default: the difficulty's). A harder ``difficulty`` starts
    neighbouring lanes in opposite directions (hand-offs at both side edges from the first one on)
    and lets the next walker enter up to ``-handoff_from`` sample intervals *before* the last one
    left, so that both are at the same edge within one sample.
    """
    width, height = size
    rng = random.Random(seed)
    cast = _Casting(roles, rng)
    sizes = difficulty.handoff_sizes if sizes is None else sizes
    lanes = max(1, min(len(sizes), people // 2))
    used = list(sizes[:lanes])
    order = sorted(range(lanes), key=lambda k: used[k])  # small faces higher up (farther away)
    walks: list[Walk] = []
    for lane in range(lanes):
        w = used[lane] * height / 720.0
        rank = order.index(lane)
        y = height * (0.2 + 0.55 * rank / (lanes - 1)) if lanes > 1 else height * 0.45
        t = 0.3 + 0.7 * lane
        leftwards = rng.random() < 0.5
        if difficulty.handoff_from < 0:
            leftwards = lane % 2 == 1
        for _ in range(people // lanes + (1 if lane < people % lanes else 0)):
            role, photo = cast.next()
            x0, x1 = (width + _out(w), -_out(w)) if leftwards else (-_out(w), width + _out(w))
            duration = rng.uniform(3.5, 5.0)
            _, duration, fast = _size_and_pace(rng, replace(difficulty, small_share=0.0), w, duration, height)
            cy = y + rng.uniform(-10, 10)
            path = glide([(t, x0, cy, w), (t + duration, x1, cy, w)], fps, bob=0.03, phase=rng.uniform(0, 6.3))
            walks.append(Walk(role.label, role.enrolled, lane, photo, path,  # type: ignore[arg-type]
                              **_look(rng, difficulty), **_blur(difficulty, fast, width, w, duration)))
            # The next one enters where this one left, within one sample interval (before or after).
            t = path[-1].t + rng.uniform(difficulty.handoff_from / sample_fps, 1.0 / sample_fps)
            leftwards = not leftwards
    return sorted(walks, key=lambda w: w.start_s)


def crossing_plan(
    roles: Sequence[Role], *, people: int = 24, size: tuple[int, int] = (1280, 720), fps: int = 25, seed: int = 0,
    difficulty: Difficulty = NORMAL,
) -> list[Walk]:
    """Pairs walking towards each other in one lane and passing: a near face (115-135 px wide) and a
    far one (75-95 px, a little higher); the near one is drawn over the far one (see
    :func:`render_walks`). Two lanes of successive crossings (one when ``people`` < 4). A harder
    ``difficulty`` makes some far faces small and some walkers fast."""
    width, height = size
    rng = random.Random(seed)
    cast = _Casting(roles, rng)
    pairs = max(1, people // 2)
    lanes = 2 if pairs >= 2 else 1
    walks: list[Walk] = []
    for lane in range(lanes):
        y = height * (0.33 + 0.4 * lane) if lanes > 1 else height * 0.5
        t = 0.3 + 1.1 * lane
        for _ in range(pairs // lanes + (1 if lane < pairs % lanes else 0)):
            near_w, far_w = rng.uniform(115, 135) * height / 720, rng.uniform(75, 95) * height / 720
            near_left = rng.random() < 0.5
            ends = []
            if difficulty.small_share and rng.random() < difficulty.small_share:
                far_w = rng.uniform(*difficulty.small_px) * height / 720
            for w, cy, from_left in ((near_w, y, near_left), (far_w, y - 0.15 * near_w, not near_left)):
                role, photo = cast.next()
                x0, x1 = (-_out(w), width + _out(w)) if from_left else (width + _out(w), -_out(w))
                duration = rng.uniform(4.0, 5.5)
                _, duration, fast = _size_and_pace(rng, replace(difficulty, small_share=0.0), w, duration, height)
                path = glide([(t, x0, cy, w), (t + duration, x1, cy, w)], fps, bob=0.03, phase=rng.uniform(0, 6.3))
                walks.append(Walk(role.label, role.enrolled, lane, photo, path,  # type: ignore[arg-type]
                                  **_look(rng, difficulty), **_blur(difficulty, fast, width, w, duration)))
                ends.append(path[-1].t)
            t = max(ends) + rng.uniform(0.3, 1.0)
    return sorted(walks, key=lambda w: w.start_s)


def return_plan(
    roles: Sequence[Role], *, people: int = 12, size: tuple[int, int] = (1280, 720), fps: int = 25, seed: int = 0,
    difficulty: Difficulty = NORMAL,
) -> list[Walk]:
    """People who walk in from a side edge, turn, walk out through it, and come back through it 1-3 s
    later to cross the frame: two appearances each (same photo), in two lanes (one when ``people`` < 2).

    A harder ``difficulty`` makes some faces small and, with ``return_changed``, brings the person
    back with their next probe photo and another look (light, head turn), as a camera sees someone
    who comes back from another room."""
    width, height = size
    rng = random.Random(seed)
    cast = _Casting(roles, rng)
    lanes = 2 if people >= 2 else 1
    walks: list[Walk] = []
    for lane in range(lanes):
        y = height * (0.32 + 0.4 * lane) if lanes > 1 else height * 0.45
        t = 0.3 + 1.3 * lane
        for _ in range(people // lanes + (1 if lane < people % lanes else 0)):
            role, photo = cast.next()
            look = _look(rng, difficulty)
            w = rng.uniform(90, 130) * height / 720
            w, _, _ = _size_and_pace(rng, replace(difficulty, fast_share=0.0), w, 1.0, height)
            from_left = rng.random() < 0.5
            edge, other = (-_out(w), width + _out(w)) if from_left else (width + _out(w), -_out(w))
            turn = width * rng.uniform(0.3, 0.7)
            cy = y + rng.uniform(-15, 15)
            t_in, t_stay = t + rng.uniform(1.5, 2.5), rng.uniform(0.3, 1.0)
            t_out = t_in + t_stay + rng.uniform(1.5, 2.5)
            first = glide([(t, edge, cy, w), (t_in, turn, cy, w), (t_in + t_stay, turn, cy, w), (t_out, edge, cy, w)],
                          fps, bob=0.03, phase=rng.uniform(0, 6.3))
            back = first[-1].t + rng.uniform(1.0, 3.0)
            second = glide([(back, edge, cy, w), (back + rng.uniform(4.0, 5.5), other, cy, w)], fps, bob=0.03,
                           phase=rng.uniform(0, 6.3))
            again, look_again = photo, look
            if difficulty.return_changed:
                again, look_again = cast.photo_of(role), _look(rng, difficulty)
            for path, shown, how in ((first, photo, look), (second, again, look_again)):
                walks.append(Walk(role.label, role.enrolled, lane, shown, path, **how))  # type: ignore[arg-type]
            t = second[-1].t + rng.uniform(0.5, 1.5)
    return sorted(walks, key=lambda w: w.start_s)


def family_plan(
    family: str, roles: Sequence[Role], *, people: int | None = None, size: tuple[int, int] = (1280, 720),
    fps: int = 25, sample_fps: float = 5.0, seed: int = 0, difficulty: Difficulty = NORMAL,
) -> list[Walk]:
    """The walks of ``family`` (one of :data:`FAMILIES`); ``people`` scales it (walks: 3 s of clip each)."""
    d = difficulty
    if family == "walks":
        seconds = 90.0 if people is None else max(8.0, 3.0 * people)
        return walks_plan(roles, seconds=seconds, size=size, fps=fps, seed=seed, difficulty=d)
    if family == "handoff":
        return handoff_plan(roles, people=people or 18, size=size, fps=fps, sample_fps=sample_fps, seed=seed,
                            difficulty=d)
    if family == "crossing":
        return crossing_plan(roles, people=people or 24, size=size, fps=fps, seed=seed, difficulty=d)
    if family == "return":
        return return_plan(roles, people=people or 12, size=size, fps=fps, seed=seed, difficulty=d)
    raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")


def head_box(face: Box) -> Box:
    """Where a head sprite around ``face`` is opaque, roughly: the ellipse of :func:`cut_head`'s mask
    reaches ~0.28 face widths beside the face box, ~0.54 heights above it and ~0.24 below."""
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    return (x1 - 0.28 * w, y1 - 0.54 * h, x2 + 0.28 * w, y2 + 0.24 * h)


def unhidden_share(face: Box, over: Sequence[Box], size: tuple[int, int]) -> float:
    """The share of ``face`` inside the frame and not covered by the heads of the faces ``over`` it.

    Overlaps of the covering heads with each other are counted once each (an upper bound on what
    they hide; with two faces at a time there is at most one).
    """
    width, height = size
    area = (face[2] - face[0]) * (face[3] - face[1])
    if area <= 0:
        return 0.0
    inside = _clip(face, width, height)
    seen = _area(inside)
    hidden = sum(_area(_intersect(inside, head_box(b))) for b in over)
    return round(max(0.0, seen - hidden) / area, 3)


def _clip(box: Box, width: float, height: float) -> Box:
    return (max(0.0, box[0]), max(0.0, box[1]), min(width, box[2]), min(height, box[3]))


def _intersect(a: Box, b: Box) -> Box:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def turn_head(sprite: Sprite, yaw: float) -> Sprite:
    """The head of ``sprite`` as if turned by ``yaw`` degrees (> 0: its left side towards the camera).

    A flat stand-in for a turned head: the sprite is squashed horizontally by cos(yaw) and its far
    side is made a little shorter (a perspective warp), so that the face is narrower than a frontal
    face of the same height and its two halves differ in size, as a turned face's do. The face box
    follows the warp (the bounding box of its warped corners).
    """
    if not yaw:
        return sprite
    h, w = sprite.alpha.shape
    turned = math.radians(abs(yaw))
    new_w = max(2, int(round(w * math.cos(turned))))
    dy = 0.12 * math.sin(turned) * h  # the far side's top and bottom move in by this much each
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    if yaw > 0:  # left side near, right side far
        dst = np.float32([[0, 0], [new_w, dy], [new_w, h - dy], [0, h]])
    else:
        dst = np.float32([[0, dy], [new_w, 0], [new_w, h], [0, h - dy]])
    m = cv2.getPerspectiveTransform(src, dst)
    bgr = cv2.warpPerspective(np.ascontiguousarray(sprite.bgr), m, (new_w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ascontiguousarray(sprite.alpha), m, (new_w, h), flags=cv2.INTER_LINEAR)
    x1, y1, x2, y2 = sprite.face_box
    corners = cv2.perspectiveTransform(np.float32([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]]), m)[0]
    box = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()),
           float(corners[:, 1].max()))
    return Sprite(bgr, alpha, box)


def worsen(sprite: Sprite, walk: Walk) -> Sprite:
    """``sprite`` with ``walk``'s head turn, contrast and motion blur (the walk's ``blur_px`` is in
    frame pixels: the kernel is scaled to the sprite, which is drawn at ``walk.face_w``)."""
    sprite = turn_head(sprite, walk.yaw)
    bgr, alpha = sprite.bgr, sprite.alpha
    if walk.contrast != 1.0:
        weight = alpha[..., None]
        mean = (bgr * weight).sum(axis=(0, 1)) / max(1e-6, float(weight.sum()))
        bgr = np.clip(mean + walk.contrast * (bgr.astype(np.float32) - mean), 0, 255).astype(np.uint8)
    if walk.blur_px > 0:
        scale = walk.face_w / max(1.0, sprite.face_box[2] - sprite.face_box[0])
        length = max(1, int(round(walk.blur_px / scale)))
        if length > 1:
            # A horizontal box kernel: the face moved sideways this far while the shutter was open.
            kernel = np.full((1, length), 1.0 / length, np.float32)
            bgr = cv2.filter2D(np.ascontiguousarray(bgr), -1, kernel, borderType=cv2.BORDER_CONSTANT)
            alpha = cv2.filter2D(np.ascontiguousarray(alpha), -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return Sprite(np.ascontiguousarray(bgr), np.ascontiguousarray(alpha), sprite.face_box)


def light_field(size: tuple[int, int], floor: float, seed: int = 0) -> np.ndarray | None:
    """A gain per pixel (H x W x 1, float32) for uneven light: a broad bright patch around a random
    column, falling to ``floor`` on the far side; None when ``floor`` is 1 (even light)."""
    if floor >= 1.0:
        return None
    width, height = size
    rng = random.Random(seed)
    centre = width * rng.choice((0.2, 0.8))
    x = np.arange(width, dtype=np.float32)
    across = np.exp(-(((x - centre) / (0.45 * width)) ** 2))
    down = np.linspace(1.0, 0.85, height, dtype=np.float32)  # lit from above
    gain = floor + (1.0 - floor) * across[None, :] * down[:, None]
    return np.ascontiguousarray(gain[..., None], dtype=np.float32)


class LitScene(Scene):
    """A :class:`~streamd.demo.scene.Scene` under uneven light: each frame times a fixed gain field."""

    def __init__(self, *args: object, gain: np.ndarray | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gain = gain

    def frame(self, index: int) -> tuple[np.ndarray, list[TruthFace]]:
        image, faces = super().frame(index)
        if self.gain is None:
            return image, faces
        return np.clip(image.astype(np.float32) * self.gain, 0, 255).astype(np.uint8), faces


def render_walks(
    walks: Sequence[Walk],
    path: Path,
    detect: Detect,
    *,
    wall: np.ndarray,
    roles: Sequence[Role] = (),
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    gop: int = 25,
    crf: int | None = None,
    tail_s: float = 0.5,
    difficulty: Difficulty = NORMAL,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SceneClip:
    """Render ``walks`` over ``wall`` and encode them to ``path`` (H.264), like :func:`render_scene`.

    Larger faces are drawn over smaller ones (nearer people hide farther ones), and the truth's
    visible share leaves out the part of a face such a head covers (:func:`unhidden_share`). A
    walk whose photo has no face ``detect`` finds shows the person's next probe photo in ``roles``
    that has one. The clip ends ``tail_s`` after the last walk. Each head gets its walk's turn,
    contrast and blur (:func:`worsen`); ``difficulty`` gives the light (:func:`light_field`, placed
    by ``seed``) and, unless ``crf`` is given, the compression.
    """
    probes = {r.label: r.probes or (r.video_image,) for r in roles}
    heads: dict[Path, tuple[np.ndarray, tuple[int, int, int, int]] | None] = {}

    def head(photo: Path) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        if photo not in heads:
            image = read_image(photo)
            faces = list(detect(image))
            f = max(faces, key=lambda x: x.area) if faces else None
            box = tuple(int(round(v)) for v in f.box) if f is not None else None
            heads[photo] = None if box is None else (image, box)  # type: ignore[assignment]
        return heads[photo]

    sprites: dict[Actor, Sprite] = {}
    actors: list[Actor] = []
    appearances: list[Appearance] = []
    for walk in sorted(walks, key=lambda w: (w.face_w, w.start_s)):  # drawn in this order: nearer over farther
        photo = next((p for p in (walk.image, *probes.get(walk.label, ())) if head(p) is not None), None)
        if photo is None:
            raise ValueError(f"{walk.image}: no face found to put in the scene")
        image, box = head(photo)  # type: ignore[misc]
        actor = Actor(Person(walk.label, walk.enrolled), photo, box, walk.mirror, walk.path,  # type: ignore[arg-type]
                      tilt=walk.tilt, gamma=walk.gamma)
        sprites[actor] = worsen(cut_head(image, box, mirror=walk.mirror, tilt=walk.tilt, gamma=walk.gamma), walk)
        actors.append(actor)
        appearances.append(walk.appearance(photo))
    seconds = max(w.end_s for w in walks) + tail_s
    grey = cv2.cvtColor(wall, cv2.COLOR_BGR2GRAY) if wall.ndim == 3 else wall
    scene = LitScene(brick_wall(grey, *size), sprites, tuple(actors), fps=fps, duration_s=seconds,
                     gain=light_field(size, difficulty.light_floor, seed))
    truth = _encode(scene, path, size=size, fps=fps, gop=gop, crf=difficulty.crf if crf is None else crf,
                    occlusion=True, progress=progress)
    appearances.sort(key=lambda a: (a.start_s, a.lane))
    return SceneClip(path, size[0], size[1], fps, gop, scene.frame_count, tuple(appearances), tuple(truth))

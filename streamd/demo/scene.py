"""The demo's cast and the video scene: faces cut from package photos sliding over a brick wall.

Enrolled people are put into the gallery from their own photos; the video shows them from a
different photo where the packages have one (Obama) and mirrored otherwise, so the video never
repeats a gallery image pixel for pixel. Never-enrolled people (faces from insightface's group
photo and its Tom Hanks sample) share the frame with them and must stay unknown.

Face boxes in the source photos were found once with dlib's HOG detector on the pinned package
versions; ``expected_size`` guards against another version of a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from streamd.demo.sources import FACE_RECOGNITION, INSIGHTFACE, SCIKIT_IMAGE, DemoDataUnavailable, PackageFile
from streamd.images import decode_image

# ---------------------------------------------------------------------------------------- files

_FR_IMAGES = "face_recognition-1.3.0/tests/test_images"
_IF_IMAGES = "insightface-2.1/insightface/data/images"
_FR_NOTE = "Photograph shipped in face_recognition's test suite (tests/test_images)."
_T1_NOTE = (
    "Group photo (six people) shipped as a sample image in insightface (insightface/data/images); "
    "the demo cuts single faces from it as never-enrolled people."
)

OBAMA = PackageFile(FACE_RECOGNITION, f"{_FR_IMAGES}/obama.jpg", _FR_NOTE + " Barack Obama.")
OBAMA2 = PackageFile(FACE_RECOGNITION, f"{_FR_IMAGES}/obama2.jpg", _FR_NOTE + " Barack Obama.")
OBAMA3 = PackageFile(FACE_RECOGNITION, f"{_FR_IMAGES}/obama3.jpg", _FR_NOTE + " Barack Obama.")
BIDEN = PackageFile(FACE_RECOGNITION, f"{_FR_IMAGES}/biden.jpg", _FR_NOTE + " Joe Biden.")
TOM_HANKS = PackageFile(
    INSIGHTFACE,
    f"{_IF_IMAGES}/Tom_Hanks_54745.png",
    "112x112 aligned face crop shipped as a sample image in insightface (named after its subject).",
)
GROUP = PackageFile(INSIGHTFACE, f"{_IF_IMAGES}/t1.jpg", _T1_NOTE)
ASTRONAUT = PackageFile(
    SCIKIT_IMAGE,
    "skimage/data/astronaut.png",
    "Eileen Collins, NASA astronaut. skimage.data.astronaut: 'downloaded from the NASA Great Images "
    "database <https://flic.kr/p/r9qvLn>. No known copyright restrictions, released into the public domain.'",
)
BRICK = PackageFile(
    SCIKIT_IMAGE,
    "skimage/data/brick.png",
    "Brick wall texture (the video's background). skimage.data.brick: from CC0Textures (CC0).",
)

#: (width, height) of each file in the pinned package versions.
EXPECTED_SIZE: dict[PackageFile, tuple[int, int]] = {
    OBAMA: (910, 1137),
    OBAMA2: (626, 1200),
    OBAMA3: (1434, 2333),
    BIDEN: (970, 2204),
    TOM_HANKS: (112, 112),
    GROUP: (1280, 886),
    ASTRONAUT: (512, 512),
    BRICK: (512, 512),
}

#: Every package file the demo reads.
ALL_FILES: tuple[PackageFile, ...] = tuple(EXPECTED_SIZE)

# ---------------------------------------------------------------------------------------- cast


@dataclass(frozen=True)
class Person:
    """Someone in the demo: enrolled people have gallery photos, the others must stay unknown."""

    label: str
    enrolled: bool
    gallery: tuple[PackageFile, ...] = ()


@dataclass(frozen=True)
class Keyframe:
    """Where an actor's face is at time ``t`` (seconds): its centre and its width in pixels."""

    t: float
    cx: float
    cy: float
    face_w: float


@dataclass(frozen=True)
class Actor:
    """A person's face as it moves through the video, cut from ``image`` around ``face_box``."""

    person: Person
    image: PackageFile
    face_box: tuple[int, int, int, int]
    mirror: bool
    path: tuple[Keyframe, ...]
    #: Head roll in degrees and a gamma on the pixels: the video is not the gallery photo again.
    tilt: float = 0.0
    gamma: float = 1.0

    def at(self, t: float) -> Keyframe | None:
        """The face's place at time ``t``, eased between keyframes; None before or after the path."""
        path = self.path
        if t < path[0].t or t > path[-1].t:
            return None
        for a, b in zip(path, path[1:]):
            if a.t <= t <= b.t:
                u = 0.0 if b.t == a.t else (t - a.t) / (b.t - a.t)
                u = u * u * (3.0 - 2.0 * u)  # smoothstep: faces ease in and out like people do
                return Keyframe(
                    t, a.cx + (b.cx - a.cx) * u, a.cy + (b.cy - a.cy) * u, a.face_w + (b.face_w - a.face_w) * u
                )
        return path[-1]


BARACK_OBAMA = Person("Barack_Obama", True, (OBAMA, OBAMA3))
JOE_BIDEN = Person("Joe_Biden", True, (BIDEN,))
EILEEN_COLLINS = Person("Eileen_Collins", True, (ASTRONAUT,))
PEOPLE: tuple[Person, ...] = (
    BARACK_OBAMA,
    JOE_BIDEN,
    EILEEN_COLLINS,
    Person("Tom_Hanks", False),
    Person("guest_1", False),
    Person("guest_2", False),
    Person("guest_3", False),
    Person("guest_4", False),
)
_BY_LABEL = {p.label: p for p in PEOPLE}

WIDTH, HEIGHT, FPS, DURATION_S = 1280, 720, 25, 12.0
_OFF_L, _OFF_R, _OFF_T, _OFF_B = -220.0, WIDTH + 220.0, -220.0, HEIGHT + 260.0

ACTORS: tuple[Actor, ...] = (
    Actor(BARACK_OBAMA, OBAMA2, (164, 302, 474, 611), False, (
        Keyframe(0.2, _OFF_L, 300, 160), Keyframe(1.3, 300, 300, 160),
        Keyframe(4.4, 380, 330, 170), Keyframe(5.4, _OFF_L, 330, 170),
    )),
    Actor(_BY_LABEL["guest_1"], GROUP, (734, 365, 837, 469), False, (
        Keyframe(0.8, _OFF_R, 260, 120), Keyframe(1.8, 980, 260, 120),
        Keyframe(4.8, 920, 290, 130), Keyframe(5.8, _OFF_R, 290, 130),
    )),
    Actor(_BY_LABEL["guest_2"], GROUP, (1114, 284, 1217, 388), True, (
        Keyframe(2.4, 650, _OFF_T, 105), Keyframe(3.3, 650, 180, 105),
        Keyframe(6.4, 670, 200, 110), Keyframe(7.3, 670, _OFF_T, 110),
    ), tilt=-6.0),
    Actor(JOE_BIDEN, BIDEN, (439, 233, 749, 542), True, (
        Keyframe(5.0, 380, _OFF_B, 130), Keyframe(6.0, 380, 430, 130),
        Keyframe(8.0, 430, 390, 200), Keyframe(8.9, 430, _OFF_B, 200),
    ), tilt=8.0, gamma=1.25),
    Actor(_BY_LABEL["Tom_Hanks"], TOM_HANKS, (16, 26, 102, 112), False, (
        Keyframe(6.0, _OFF_R, 430, 115), Keyframe(7.0, 1010, 430, 115),
        Keyframe(9.2, 1050, 410, 120), Keyframe(10.0, _OFF_R, 410, 120),
    )),
    Actor(EILEEN_COLLINS, ASTRONAUT, (179, 83, 266, 170), True, (
        Keyframe(8.2, _OFF_L, 330, 150), Keyframe(9.2, 320, 330, 150),
        Keyframe(11.2, 360, 300, 165), Keyframe(12.0, _OFF_L, 300, 165),
    ), tilt=-7.0, gamma=0.8),
    Actor(_BY_LABEL["guest_3"], GROUP, (65, 284, 169, 388), False, (
        Keyframe(8.6, 720, _OFF_T, 130), Keyframe(9.4, 740, 200, 130),
        Keyframe(11.4, 720, 220, 130), Keyframe(12.0, 720, _OFF_T, 130),
    )),
    Actor(_BY_LABEL["guest_4"], GROUP, (452, 300, 577, 424), False, (
        Keyframe(9.9, 1040, _OFF_B, 135), Keyframe(10.8, 1040, 540, 135),
        Keyframe(12.0, 1070, 520, 140),
    )),
)

# ---------------------------------------------------------------------------------------- sprites


@dataclass(frozen=True)
class Sprite:
    """A head cut out with a soft elliptical mask: BGR pixels, alpha in [0, 1], the face box inside."""

    bgr: np.ndarray
    alpha: np.ndarray
    face_box: tuple[float, float, float, float]


def cut_head(
    image: np.ndarray, face_box: tuple[int, int, int, int], *, mirror: bool = False, tilt: float = 0.0,
    gamma: float = 1.0,
) -> Sprite:
    """The head around ``face_box`` (hair above, chin below) with a feathered elliptical alpha.

    ``mirror`` flips it, ``tilt`` rolls it by degrees about the face centre and ``gamma`` changes
    its exposure (> 1 darker); the face box stays where the face is.
    """
    x1, y1, x2, y2 = face_box
    w, h = x2 - x1, y2 - y1
    # Hair sits above the detector's box and the chin at its bottom edge: grow unevenly.
    rx1, ry1, rx2, ry2 = int(x1 - 0.35 * w), int(y1 - 0.6 * h), int(x2 + 0.35 * w), int(y2 + 0.3 * h)
    rw, rh = rx2 - rx1, ry2 - ry1
    bgr = np.zeros((rh, rw, 3), np.uint8)
    inside = np.zeros((rh, rw), np.float32)
    sx1, sy1 = max(rx1, 0), max(ry1, 0)
    sx2, sy2 = min(rx2, image.shape[1]), min(ry2, image.shape[0])
    bgr[sy1 - ry1 : sy2 - ry1, sx1 - rx1 : sx2 - rx1] = image[sy1:sy2, sx1:sx2]
    inside[sy1 - ry1 : sy2 - ry1, sx1 - rx1 : sx2 - rx1] = 1.0
    ellipse = np.zeros((rh, rw), np.float32)
    cv2.ellipse(ellipse, (rw // 2, rh // 2), (int(rw * 0.46), int(rh * 0.47)), 0, 0, 360, 1.0, -1)
    feather = max(1.0, 0.05 * w)
    alpha = cv2.GaussianBlur(ellipse, (0, 0), feather) * cv2.GaussianBlur(inside, (0, 0), feather) * inside
    box = (float(x1 - rx1), float(y1 - ry1), float(x2 - rx1), float(y2 - ry1))
    if mirror:
        bgr, alpha = bgr[:, ::-1], alpha[:, ::-1]
        box = (rw - box[2], box[1], rw - box[0], box[3])
    if tilt:
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        m = cv2.getRotationMatrix2D(centre, tilt, 1.0)
        bgr = cv2.warpAffine(np.ascontiguousarray(bgr), m, (rw, rh), flags=cv2.INTER_CUBIC)
        alpha = cv2.warpAffine(np.ascontiguousarray(alpha), m, (rw, rh), flags=cv2.INTER_LINEAR)
    if gamma != 1.0:
        lut = (255.0 * (np.arange(256) / 255.0) ** gamma).clip(0, 255).astype(np.uint8)
        bgr = cv2.LUT(np.ascontiguousarray(bgr), lut)
    return Sprite(np.ascontiguousarray(bgr), np.ascontiguousarray(alpha), box)


def brick_wall(brick_gray: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A warm, low-contrast brick wall lit from above: a quiet background without face-like shapes."""
    # The texture's courses run vertically: turn it, and scale one tile over the whole frame
    # (no tiling seams).
    side = max(width, height)
    turned = cv2.rotate(brick_gray, cv2.ROTATE_90_CLOCKWISE)
    tile = cv2.resize(turned, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    top = (side - height) // 2
    wall = tile[top : top + height, :width]
    wall = 0.35 * (wall - wall.mean()) + 150.0
    light = np.linspace(1.1, 0.75, height, dtype=np.float32)[:, None]
    tint = np.array([0.78, 0.88, 1.05], np.float32)  # BGR: terracotta
    return np.clip(wall[..., None] * light[..., None] * tint, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class TruthFace:
    """Where a person's face is in one frame; ``visible`` is the share of its box inside the frame."""

    label: str
    box: tuple[float, float, float, float]
    visible: float


class Scene:
    """Renders frames and their ground truth from the cast's sprites over the background."""

    def __init__(self, background: np.ndarray, sprites: dict[Actor, Sprite], actors: tuple[Actor, ...] = ACTORS,
                 *, fps: int = FPS, duration_s: float = DURATION_S) -> None:
        self.background = background
        self.sprites = sprites
        self.actors = actors
        self.fps = fps
        self.frame_count = int(round(duration_s * fps))
        self.height, self.width = background.shape[:2]

    def frame(self, index: int) -> tuple[np.ndarray, list[TruthFace]]:
        """The BGR frame ``index`` and the faces in it."""
        t = index / self.fps
        canvas = self.background.astype(np.float32)
        truth: list[TruthFace] = []
        for actor in self.actors:
            place = actor.at(t)
            if place is None:
                continue
            face = self._paste(canvas, self.sprites[actor], place)
            if face is not None:
                truth.append(TruthFace(actor.person.label, *face))
        return np.clip(canvas, 0, 255).astype(np.uint8), truth

    def frames(self) -> Iterator[tuple[int, np.ndarray, list[TruthFace]]]:
        for index in range(self.frame_count):
            yield (index, *self.frame(index))

    def _paste(
        self, canvas: np.ndarray, sprite: Sprite, place: Keyframe
    ) -> tuple[tuple[float, float, float, float], float] | None:
        fx1, fy1, fx2, fy2 = sprite.face_box
        scale = place.face_w / (fx2 - fx1)
        sh, sw = sprite.alpha.shape
        tw, th = max(1, int(round(sw * scale))), max(1, int(round(sh * scale)))
        # Top-left of the scaled sprite so that the face centre lands on (cx, cy).
        ox = place.cx - (fx1 + fx2) / 2 * scale
        oy = place.cy - (fy1 + fy2) / 2 * scale
        box = (ox + fx1 * scale, oy + fy1 * scale, ox + fx2 * scale, oy + fy2 * scale)
        x0, y0 = int(round(ox)), int(round(oy))
        cx1, cy1 = max(x0, 0), max(y0, 0)
        cx2, cy2 = min(x0 + tw, self.width), min(y0 + th, self.height)
        if cx1 >= cx2 or cy1 >= cy2:
            return None
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        bgr = cv2.resize(sprite.bgr, (tw, th), interpolation=interp).astype(np.float32)
        alpha = np.clip(cv2.resize(sprite.alpha, (tw, th), interpolation=cv2.INTER_LINEAR), 0, 1)[..., None]
        sub = (slice(cy1 - y0, cy2 - y0), slice(cx1 - x0, cx2 - x0))
        region = canvas[cy1:cy2, cx1:cx2]
        region[:] = region * (1.0 - alpha[sub]) + bgr[sub] * alpha[sub]
        bw, bh = box[2] - box[0], box[3] - box[1]
        ix = max(0.0, min(box[2], self.width) - max(box[0], 0.0))
        iy = max(0.0, min(box[3], self.height) - max(box[1], 0.0))
        visible = (ix * iy) / (bw * bh)
        if visible <= 0:
            return None
        return tuple(round(v, 1) for v in box), round(visible, 3)  # type: ignore[return-value]


def load_image(data: bytes, file: PackageFile) -> np.ndarray:
    """Decode a package image (BGR), checking it is the file version the scene was made for."""
    image = decode_image(data, name=file.member)
    expected = EXPECTED_SIZE.get(file)
    if expected is not None and (image.shape[1], image.shape[0]) != expected:
        raise DemoDataUnavailable(
            f"{file.member} in {file.package.requirement} is {image.shape[1]}x{image.shape[0]}, "
            f"expected {expected[0]}x{expected[1]}: another file version than the demo was made for"
        )
    return image

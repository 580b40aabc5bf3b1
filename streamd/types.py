"""The typed, immutable messages that flow between stages.

camera -> decode -> sample -> detect -> align/crop -> embed -> search -> track -> decide -> publish

Each message validates its shapes when it is created, so a bad array fails at the boundary
with the expected and the actual shape rather than deep inside a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates.

    ``box`` is (x1, y1, x2, y2). ``landmarks`` is a (5, 2) float32 array in the ArcFace order
    (left eye, right eye, nose, left mouth corner, right mouth corner), "left" meaning the
    subject's right eye as seen on the image's left; ``None`` when the detector gives boxes only.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.box) != 4:
            raise ValueError(f"Face.box must have 4 numbers (x1, y1, x2, y2), got {len(self.box)}")
        x1, y1, x2, y2 = (float(v) for v in self.box)
        object.__setattr__(self, "box", (x1, y1, x2, y2))
        object.__setattr__(self, "score", float(self.score))
        if self.landmarks is not None:
            lm = np.asarray(self.landmarks, dtype=np.float32)
            if lm.shape != (5, 2):
                raise ValueError(f"Face.landmarks must have shape (5, 2), got {lm.shape}")
            lm.setflags(write=False)
            object.__setattr__(self, "landmarks", lm)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def to_dict(self) -> dict:
        d: dict = {"box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        return d


@dataclass(frozen=True)
class Match:
    """One gallery hit for a query vector: the vector id, its label and the similarity score."""

    id: int
    label: str
    score: float


@dataclass(frozen=True)
class Decision:
    """The open-set decision for one face: a label, or ``None`` for unknown, and why.

    ``reason`` is one of ``known``, ``below_threshold``, ``thin_margin``, ``empty_index``.
    ``margin`` is the best label's score minus the best *different* label's score.
    """

    label: str | None
    score: float
    margin: float
    reason: str
    matches: tuple[Match, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Frame:
    """One decoded frame of a camera.

    ``pts`` is the stream time in seconds (monotonic within one connection), ``captured_at`` the
    wall-clock time.time() when it was decoded, ``seq`` a per-camera counter of sampled frames and
    ``skipped`` how many frames of the source went by since the previous sample, dropped by the
    sampler or never decoded (keyframe-only decoding) (the tracker's period). ``image`` is BGR
    uint8 (H, W, 3).
    """

    camera: str
    seq: int
    pts: float
    captured_at: float
    image: np.ndarray
    skipped: int = 0

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            shape = getattr(img, "shape", None)
            dtype = getattr(img, "dtype", type(img).__name__)
            raise ValueError(f"Frame.image must be uint8 (H, W, 3) BGR, got {dtype} {shape}")


#: The kinds of track event, in the order a track can emit them.
EVENT_TYPES = ("new", "identified", "update", "end")


@dataclass(frozen=True)
class IdentityEvent:
    """One track event, as published to MQTT and kept in /api/events/recent.

    ``type`` is ``new`` (face seen), ``identified`` (name decided), ``update`` (decision changed)
    or ``end`` (track gone). ``label`` is None while unknown. ``frame_ts`` is the wall-clock time
    of the frame that caused the event, ``decided_at`` when the decision was made; ``snapshot``
    is a path (relative to the snapshot directory) of the best face crop, or None.
    ``seq`` is a per-camera counter assigned by the publisher; ``latency_ms`` is decided_at - frame_ts.
    """

    event_id: str
    type: str
    camera: str
    track_id: int
    label: str | None
    score: float
    margin: float
    box: tuple[float, float, float, float]
    frame_ts: float
    decided_at: float
    evidence: int = 0
    duration_s: float | None = None
    zones: tuple[str, ...] = ()
    snapshot: str | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"IdentityEvent.type must be one of {EVENT_TYPES}, got {self.type!r}")

    @property
    def latency_ms(self) -> float:
        return max(0.0, (self.decided_at - self.frame_ts) * 1000.0)

    def to_dict(self) -> dict:
        """The JSON payload (see schemas/event.json)."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "camera": self.camera,
            "track_id": self.track_id,
            "label": self.label,
            "score": round(self.score, 4),
            "margin": round(self.margin, 4),
            "box": [round(v, 1) for v in self.box],
            "frame_ts": self.frame_ts,
            "decided_at": self.decided_at,
            "evidence": self.evidence,
            "duration_s": self.duration_s,
            "zones": list(self.zones),
            "snapshot": self.snapshot,
            "seq": self.seq,
            "latency_ms": round(self.latency_ms, 1),
        }

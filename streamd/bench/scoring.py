"""Scoring a recognition run against a scene's ground truth: who each track was, what it was called.

Input: the IdentityEvents of a run, the video time (pts) of the frame behind each event, and per
camera the :class:`~streamd.bench.scenes.SceneClip` it played (looped or not). Each track is
matched to the person whose true face box overlaps its box best in the frame of its first event;
then

- an enrolled person's track is *named correctly* when its last decision is that person's label;
- a never-enrolled person's track is *wrongly named* when it was ever given any label;
- *time to identify* is, in video time, from the first frame where the person's face is (almost)
  fully in view to the frame whose result was the track's ``identified`` event.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from streamd.bench.scenes import SceneClip
from streamd.tracking.geometry import iou_matrix
from streamd.types import IdentityEvent

Box = tuple[float, float, float, float]


@dataclass
class TrackOutcome:
    """One track of one camera and what the run decided about it."""

    camera: str
    track_id: int
    #: The person it followed (None: no true face under it, a false detection), and whether enrolled.
    truth: str | None = None
    enrolled: bool = False
    #: Video time (pts) of the track's first event and of its first ``identified`` event.
    first_pts: float | None = None
    identified_pts: float | None = None
    #: Every label decided for it, in order (None = unknown), and the last one.
    labels: list[str | None] = field(default_factory=list)
    #: Video time the person's face was first fully in view, in the same loop as the track.
    visible_pts: float | None = None

    @property
    def final(self) -> str | None:
        return self.labels[-1] if self.labels else None

    @property
    def named_correctly(self) -> bool:
        return self.truth is not None and self.final == self.truth

    @property
    def wrongly_named(self) -> bool:
        """Given a name that is not the person's (any time), or any name for a stranger."""
        return any(label is not None and label != self.truth for label in self.labels)

    @property
    def time_to_identify(self) -> float | None:
        if self.identified_pts is None or self.visible_pts is None or self.final != self.truth:
            return None
        return max(0.0, self.identified_pts - self.visible_pts)


def score_tracks(
    events: Iterable[IdentityEvent],
    event_pts: Mapping[tuple[str, float], float],
    clips: Mapping[str, SceneClip],
    *,
    min_iou: float = 0.3,
) -> list[TrackOutcome]:
    """Match every track to the truth and collect its decisions (see the module docstring).

    ``event_pts`` maps (camera, event.frame_ts) to the video time of that frame; events whose
    frame is unknown (``end`` events flushed at shutdown) only contribute their label.
    """
    tracks: dict[tuple[str, int], TrackOutcome] = {}
    for event in events:
        key = (event.camera, event.track_id)
        track = tracks.get(key)
        if track is None:
            track = tracks[key] = TrackOutcome(event.camera, event.track_id)
        pts = event_pts.get((event.camera, event.frame_ts))
        clip = clips.get(event.camera)
        if track.truth is None and pts is not None and clip is not None:
            _match(track, event.box, pts, clip, min_iou)
        if track.first_pts is None and pts is not None:
            track.first_pts = pts
        if event.type != "new" or event.label is not None:
            track.labels.append(event.label)
        if event.type == "identified" and track.identified_pts is None and pts is not None:
            track.identified_pts = pts
    return list(tracks.values())


def _match(track: TrackOutcome, box: Box, pts: float, clip: SceneClip, min_iou: float) -> None:
    faces = clip.faces_at(pts)
    if not faces:
        return
    overlaps = iou_matrix(np.asarray([box]), np.asarray([f[1] for f in faces]))[0]
    k = int(np.argmax(overlaps))
    if overlaps[k] < min_iou:
        return
    best = faces[k][0]
    track.truth = best
    loop = math.floor(pts / clip.duration_s + 1e-9)
    t = pts - loop * clip.duration_s
    appearance = next((a for a in clip.appearances if a.label == best and a.start_s - 0.1 <= t <= a.end_s + 0.1), None)
    if appearance is not None:
        track.enrolled = appearance.enrolled
        visible = clip.first_visible(appearance)
        if visible is not None:
            track.visible_pts = visible + loop * clip.duration_s
    else:
        track.enrolled = any(a.enrolled for a in clip.appearances if a.label == best)


@dataclass(frozen=True)
class Accuracy:
    """Track-level figures of a run."""

    enrolled_tracks: int
    named_correctly: int
    strangers_tracks: int
    strangers_named: int
    wrong_names: int
    unmatched_tracks: int
    unmatched_named: int
    times_to_identify: tuple[float, ...]
    never_identified: int
    #: Labels of the enrolled people's tracks not named correctly, and of strangers' tracks named.
    missed: tuple[str, ...] = ()
    misnamed: tuple[str, ...] = ()

    @property
    def correct_share(self) -> float:
        return self.named_correctly / self.enrolled_tracks if self.enrolled_tracks else float("nan")

    @property
    def median_time_to_identify(self) -> float | None:
        return statistics.median(self.times_to_identify) if self.times_to_identify else None

    def lines(self) -> list[str]:
        tti = self.median_time_to_identify
        return [
            f"enrolled people's tracks named correctly: {self.named_correctly}/{self.enrolled_tracks} "
            f"({100 * self.correct_share:.1f} %), never named {self.never_identified}, wrong name {self.wrong_names}"
            + (f" (missed: {', '.join(self.missed)})" if self.missed else ""),
            f"never-enrolled people's tracks given a name: {self.strangers_named}/{self.strangers_tracks}"
            + (f" ({', '.join(self.misnamed)})" if self.misnamed else ""),
            f"tracks on no true face: {self.unmatched_tracks} ({self.unmatched_named} named)",
            "time to identify (video time, first frame fully in view -> identified): "
            + (f"median {tti:.2f} s, p90 {_quantile(self.times_to_identify, 0.9):.2f} s, n={len(self.times_to_identify)}"
               if tti is not None else "no identification"),
        ]


def accuracy(tracks: Sequence[TrackOutcome]) -> Accuracy:
    """Summarise scored tracks."""
    enrolled = [t for t in tracks if t.truth is not None and t.enrolled]
    strangers = [t for t in tracks if t.truth is not None and not t.enrolled]
    unmatched = [t for t in tracks if t.truth is None]
    return Accuracy(
        enrolled_tracks=len(enrolled),
        named_correctly=sum(t.named_correctly for t in enrolled),
        strangers_tracks=len(strangers),
        strangers_named=sum(t.wrongly_named for t in strangers),
        wrong_names=sum(t.wrongly_named for t in enrolled),
        unmatched_tracks=len(unmatched),
        unmatched_named=sum(any(label is not None for label in t.labels) for t in unmatched),
        times_to_identify=tuple(x for t in enrolled if (x := t.time_to_identify) is not None),
        never_identified=sum(t.identified_pts is None for t in enrolled),
        missed=tuple(sorted(f"{t.truth} -> {t.final}" for t in enrolled if not t.named_correctly)),
        misnamed=tuple(sorted(f"{t.truth} -> {'/'.join(str(x) for x in t.labels if x)}" for t in strangers
                              if t.wrongly_named)),
    )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def merge(parts: Sequence[Accuracy]) -> Accuracy:
    """The figures of several runs (e.g. clips played in turns) as one."""
    if not parts:
        return Accuracy(0, 0, 0, 0, 0, 0, 0, (), 0)
    values: dict[str, object] = {}
    for f in fields(Accuracy):
        items = [getattr(p, f.name) for p in parts]
        values[f.name] = tuple(x for item in items for x in item) if isinstance(items[0], tuple) else sum(items)
    return Accuracy(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- per-sample scoring (bench scenes)
#
# ``streamd bench scenes`` records, for every sample, each track the camera shows (its box in that
# sample and the name it is shown with), instead of events only: a name carried to another person
# shows in the samples between two events, where no event is sent.


@dataclass(frozen=True)
class ShownTrack:
    """A confirmed track seen in one sample: its face's box and the label shown on it (None: unknown)."""

    track_id: int
    box: Box
    label: str | None


@dataclass(frozen=True)
class SampleRecord:
    """One sample of a clip: its video time, the tracks shown, and faces detected and embedded."""

    pts: float
    tracks: tuple[ShownTrack, ...] = ()
    detected: int = 0
    embedded: int = 0


#: A true face counts under a track's box only when at least this share of it is in view and unhidden.
MIN_VISIBLE_UNDER_BOX = 0.2


def person_under(
    box: Box, faces: Sequence[tuple[str, Box, float]], size: tuple[int, int], *, min_iou: float = 0.3,
    min_visible: float = MIN_VISIBLE_UNDER_BOX,
) -> int | None:
    """Which of a frame's true ``faces`` (label, box, visible share) ``box`` covers: the index of the
    one it overlaps most, at IoU >= ``min_iou`` with the true box cut to the frame, or None."""
    width, height = size
    candidates = [k for k, f in enumerate(faces) if f[2] >= min_visible]
    if not candidates:
        return None
    truth = [(max(0.0, b[0]), max(0.0, b[1]), min(width, b[2]), min(height, b[3])) for _, b, _ in
             (faces[k] for k in candidates)]
    overlaps = iou_matrix(np.asarray([box], dtype=np.float64), np.asarray(truth, dtype=np.float64))[0]
    best = int(np.argmax(overlaps))
    return candidates[best] if overlaps[best] >= min_iou else None


def appearance_at(clip: SceneClip, label: str, t: float, slack_s: float = 0.1) -> int | None:
    """The index in ``clip.appearances`` of ``label``'s appearance at video time ``t`` (None: none)."""
    for k, a in enumerate(clip.appearances):
        if a.label == label and a.start_s - slack_s <= t <= a.end_s + slack_s:
            return k
    return None


@dataclass(frozen=True)
class SceneScore:
    """The figures of one or more clips of ``streamd bench scenes`` (see :func:`score_samples`)."""

    family: str
    samples: int
    enrolled_appearances: int
    #: Enrolled appearances shown with their correct name at some sample, and the others.
    named: int
    never_named: int
    stranger_appearances: int
    #: Never-enrolled appearances shown with any name at some sample.
    strangers_named: int
    #: Tracks shown in at least one sample.
    tracks: int
    #: Tracks shown, at some sample, with an enrolled name while their box covered a different person.
    tracks_misnamed: int
    #: Tracks whose box covered two or more different people over their life.
    carried_tracks: int
    #: Tracks shown with a name while their box covered no true face.
    named_off_face: int
    #: Per named enrolled appearance with a fully visible frame: seconds from that frame to the first
    #: sample its name was shown.
    times_to_identify: tuple[float, ...]
    detected: int
    embedded: int
    #: What went wrong, one line each: "track 3: Ana shown on Bob at 12.4 s", "track 5: Ana, Bob", ...
    misnamed: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()

    @property
    def embeddings_per_sample(self) -> float:
        return self.embedded / self.samples if self.samples else float("nan")

    @property
    def median_time_to_identify(self) -> float | None:
        return statistics.median(self.times_to_identify) if self.times_to_identify else None

    @property
    def p90_time_to_identify(self) -> float | None:
        return _quantile(self.times_to_identify, 0.9) if self.times_to_identify else None


def score_samples(
    samples: Sequence[SampleRecord], clip: SceneClip, *, family: str = "", min_iou: float = 0.3,
    min_visible: float = 0.9,
) -> SceneScore:
    """Score one clip's samples against its truth.

    At every sample, each shown track's box is put on the true person it covers
    (:func:`person_under`). An enrolled appearance is *named* when a track on it showed its label
    at some sample; a never-enrolled one is *named* when a track on it showed any label. A track
    is *misnamed* when it showed a label while on a different person, and *carried* when it was
    on two or more different people over its life. Time to identify runs from the first frame
    the appearance's face is at least ``min_visible`` in view (and unhidden) to the first sample
    its name was shown on it.
    """
    size = (clip.width, clip.height)
    named_at: dict[int, float] = {}
    shown_any: set[int] = set()
    people: dict[int, list[str]] = {}
    misnamed: dict[int, str] = {}
    off_face: set[int] = set()
    for sample in samples:
        faces = clip.faces_at(sample.pts)
        for shown in sample.tracks:
            on = people.setdefault(shown.track_id, [])
            k = person_under(shown.box, faces, size, min_iou=min_iou)
            if k is None:
                if shown.label is not None:
                    off_face.add(shown.track_id)
                continue
            person = faces[k][0]
            if person not in on:
                on.append(person)
            if shown.label is None:
                continue
            if shown.label != person and shown.track_id not in misnamed:
                misnamed[shown.track_id] = (f"track {shown.track_id}: {shown.label} shown on {person} "
                                            f"at {sample.pts:.1f} s")
            index = appearance_at(clip, person, sample.pts)
            if index is None:
                continue
            shown_any.add(index)
            if shown.label == person and index not in named_at:
                named_at[index] = sample.pts
    enrolled = [k for k, a in enumerate(clip.appearances) if a.enrolled]
    strangers = [k for k, a in enumerate(clip.appearances) if not a.enrolled]
    times = []
    for k in enrolled:
        if k in named_at:
            visible = clip.first_visible(clip.appearances[k], min_visible)
            if visible is not None:
                times.append(round(max(0.0, named_at[k] - visible), 3))
    carried = {t: on for t, on in people.items() if len(on) > 1}

    def where(k: int) -> str:
        a = clip.appearances[k]
        return f"{a.label} ({a.start_s:.1f}-{a.end_s:.1f} s)"

    return SceneScore(
        family=family,
        samples=len(samples),
        enrolled_appearances=len(enrolled),
        named=sum(k in named_at for k in enrolled),
        never_named=sum(k not in named_at for k in enrolled),
        stranger_appearances=len(strangers),
        strangers_named=sum(k in shown_any for k in strangers),
        tracks=len({t.track_id for sample in samples for t in sample.tracks}),
        tracks_misnamed=len(misnamed),
        carried_tracks=len(carried),
        named_off_face=len(off_face),
        times_to_identify=tuple(times),
        detected=sum(s.detected for s in samples),
        embedded=sum(s.embedded for s in samples),
        misnamed=tuple(misnamed[t] for t in sorted(misnamed)),
        carried=tuple(f"track {t}: {', '.join(on)}" for t, on in sorted(carried.items())),
        missed=tuple(where(k) for k in enrolled if k not in named_at),
    )


def merge_scores(parts: Sequence[SceneScore], family: str = "") -> SceneScore:
    """Several clips' figures as one (counts and lists added up)."""
    values: dict[str, object] = {"family": family or "+".join(p.family for p in parts)}
    for f in fields(SceneScore):
        if f.name == "family":
            continue
        items = [getattr(p, f.name) for p in parts]
        if str(f.type).startswith("tuple"):
            values[f.name] = tuple(x for item in items for x in item)
        else:
            values[f.name] = sum(items)
    return SceneScore(**values)  # type: ignore[arg-type]

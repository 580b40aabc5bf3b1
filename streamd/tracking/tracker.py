"""Per-camera face tracker: associate faces across samples, on boxes first and features when needed.

One :class:`FaceTracker` per camera; all state is per instance. Each sample goes in two steps,
so that a face is only embedded when it helps:

1. :meth:`FaceTracker.associate` takes the frame time, the decoded frames the sampler skipped and
   the faces (with the caller's quality figures). It predicts every track's box (constant velocity
   of the box centre, scaled by the time gap), and links faces to tracks by IoU. A face that
   overlaps exactly one track, which overlaps no other face and was seen in the previous sample,
   continues that track on boxes alone (after a missed sample its features must agree: someone
   else may have stepped into the place of a person who left).
   Faces in overlapping groups, faces near a track they no longer overlap, and new faces are
   *pending*: their features decide. The returned :class:`Association` lists the faces to embed
   (:class:`EmbedRequest`): pending faces, new faces, faces of tracks whose re-embed policy
   says so (see :func:`embed_reason`), and faces linked on boxes that no longer look like their
   track's previous face (:func:`changed`: a jump in size or position beyond the motion model,
   another grey layout or colour of the face box): someone else may have stepped into the place.
2. :meth:`FaceTracker.commit` takes the vectors of the embedded faces and resolves pending groups
   with a Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on a cost mixing IoU and
   cosine similarity, gated by ``min_iou``, ``max_distance`` and ``min_similarity``. Faces left
   over start tentative tracks; a track seen ``min_hits`` samples in a row is confirmed and gets
   the camera's next track id. A face linked to a track whose vector falls below the same-person
   gate (``min_similarity``) *splits* it: the track ends there, and the face starts a new track
   (:attr:`TrackUpdate.replaces` names the ended one), decided from its own evidence only. Confirmed tracks survive ``max_lost_s`` without detections;
   tentative ones are dropped at their first miss (one-frame false detections never surface).

Faces whose box centre lies in a mask polygon are ignored; the zones a track's centre enters
are recorded on the track. A caller that already has vectors passes them to ``associate``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamd.tracking.config import TrackingSettings
from streamd.tracking.events import new_event_id
from streamd.tracking.geometry import Box, Regions, box_size, centre, iou_matrix, shift
from streamd.faces.look import FaceLook
from streamd.tracking.identity import Tally, TrackDecision, face_weight
from streamd.types import Face

#: Motion is extrapolated at most this far: a head does not keep a constant velocity for long,
#: and a lost track's prediction must not run off across the picture.
MAX_PREDICTION_S = 1.0

#: Share of the previous velocity kept when a new displacement is measured (box centres jitter
#: by a few pixels from one detection to the next).
VELOCITY_MOMENTUM = 0.5

#: A confirmed track survives at least this many sample intervals without a detection, whatever
#: max_lost_s says: at 0.5 samples per second (keyframes only) one missed sample must not end it.
MIN_LOST_SAMPLES = 2

_GATED = 1e6  # cost of a pair the gates forbid


class Track:
    """The mutable state of one track. Owned by its :class:`FaceTracker`; others only read it."""

    def __init__(self, uid: str, box: Box, ts: float, frame_no: int) -> None:
        #: Unique across cameras and restarts (sortable by creation time): names snapshot files.
        self.uid = uid
        #: The camera's track id, given when the track is confirmed (None while tentative).
        self.track_id: int | None = None
        self.box = box
        self.first_ts = ts
        self.last_ts = ts
        #: Decoded-frame numbers (counting the frames the sampler skipped) of the first and last sight.
        self.first_frame = frame_no
        self.last_frame = frame_no
        self.velocity = (0.0, 0.0)
        self.hits = 1
        #: Running mean of the face vectors (L2-normalised), or None before the first embedding.
        self.feature: np.ndarray | None = None
        #: Sum of the face vectors weighted by face weight (size x quality): the track's template
        #: once normalised (see :meth:`template`), or None before the first embedding.
        self.template_sum: np.ndarray | None = None
        #: Zones the centre has entered, in order of first entry.
        self.zones: list[str] = []
        self.embeds = 0
        self.uncertain_embeds = 0
        self.samples_since_embed = 0
        self.best_embed_weight = 0.0
        #: Identity state, kept here and updated by the caller (see streamd.tracking.identity).
        self.tally = Tally()
        self.decision: TrackDecision | None = None
        #: Every face embedded so far was far from every name (see identity.clearly_unknown): the
        #: track no longer spends the budget of uncertain tracks.
        self.clearly_unknown = False
        #: Relative path of the best face crop, when snapshots are kept.
        self.snapshot: str | None = None
        #: The look of the face of the last sample (None: not measured).
        self.look: FaceLook | None = None

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    @property
    def identified(self) -> bool:
        return self.decision is not None and self.decision.known

    def template(self) -> np.ndarray | None:
        """The quality-weighted mean of the track's face vectors, L2-normalised (None before the first)."""
        return None if self.template_sum is None else _normalised(self.template_sum)

    def predict(self, ts: float) -> Box:
        """The box expected at time ``ts`` (constant velocity of the centre, size unchanged)."""
        dt = min(max(0.0, ts - self.last_ts), MAX_PREDICTION_S)
        return shift(self.box, self.velocity[0] * dt, self.velocity[1] * dt)

    def __repr__(self) -> str:
        return f"Track(id={self.track_id}, uid={self.uid}, box={tuple(round(v) for v in self.box)})"


@dataclass(frozen=True)
class EmbedRequest:
    """A face the tracker wants embedded this sample.

    ``face_index`` indexes the faces given to :meth:`FaceTracker.associate`. ``track_id`` is the
    confirmed track the face continues, or None (new face, tentative track, or pending).
    ``reason`` is ``new``, ``ambiguous`` (overlapping faces), ``reid`` (a lost track nearby),
    ``uncertain`` (track not yet named, within its budget), ``recheck`` (every K samples),
    ``better_face`` (clearly better than anything embedded for the track) or ``changed`` (the
    face no longer looks like the track's previous one: see :func:`changed`).
    """

    face_index: int
    track_id: int | None
    reason: str


@dataclass(frozen=True)
class _Group:
    """Tracks and faces whose link needs features: IoU and distance-only candidate pairs."""

    tracks: tuple[Track, ...]
    faces: tuple[int, ...]
    iou: np.ndarray
    near: np.ndarray
    #: One face on one track that missed the previous sample: features must confirm it is the same person.
    reacquired: bool = False


@dataclass(frozen=True)
class Association:
    """The first half of a sample: what is already linked, what is pending, what to embed."""

    ts: float
    faces: tuple[Face, ...]
    quality: tuple[float | None, ...]
    #: Faces whose centre is inside a mask: never tracked, never embedded.
    ignored: frozenset[int]
    #: Face index -> track, linked on boxes alone.
    matched: Mapping[int, Track]
    groups: tuple[_Group, ...]
    #: Faces with no track candidate: they start tentative tracks.
    new: tuple[int, ...]
    requests: tuple[EmbedRequest, ...]
    #: Confirmed tracks lost for longer than max_lost_s (or ended by a backwards time jump).
    ended: tuple[Track, ...]
    vectors: Mapping[int, np.ndarray] = field(default_factory=dict)
    #: Each face's look, when measured (empty: none measured).
    looks: tuple[FaceLook | None, ...] = ()


@dataclass(frozen=True)
class TrackUpdate:
    """A track seen in this sample: with which face, and whether it was just confirmed.

    ``replaces`` is the confirmed track this face was split from: the face was linked to it but is
    not the person it followed (its vector fell below the same-person gate), so that track ended
    in this sample and ``track`` is a new one.
    """

    track: Track
    face_index: int
    face: Face
    vector: np.ndarray | None
    confirmed_now: bool
    replaces: Track | None = None


def embed_reason(track: Track, weight: float, settings: TrackingSettings) -> str | None:
    """Why the face ``track`` is seen with this sample should be embedded, or None to skip it.

    Unnamed tracks are embedded every sample until they have used ``embed_budget`` embeddings or
    are clearly unknown; named (and over-budget, and clearly unknown) tracks every
    ``recheck_every`` samples, or sooner when this face's weight (size x quality) is
    ``better_face_ratio`` times the best embedded so far.
    """
    if not track.identified and not track.clearly_unknown and track.uncertain_embeds < settings.embed_budget:
        return "uncertain"
    if track.samples_since_embed + 1 >= settings.recheck_every:
        return "recheck"
    if weight > track.best_embed_weight and weight >= settings.better_face_ratio * track.best_embed_weight:
        return "better_face"
    return None


def changed(track: Track, face: Face, look: FaceLook | None, predicted: Box, settings: TrackingSettings) -> bool:
    """Whether ``face``, linked to ``track`` on boxes, may be another person than the track's last face.

    Any one sign is enough, because a false alarm costs one embedding and a miss may carry a name
    onto someone else: the size jumped by more than ``change_size_ratio``, the centre lies more
    than ``change_shift`` face sizes from the motion model's ``predicted`` box, or (when both looks
    were measured) the grey thumbnails correlate under ``change_look_similarity`` or the mean
    colours lie more than ``change_colour_distance`` apart.
    """
    before, now = box_size(track.box), box_size(face.box)
    if before <= 0 or now <= 0:
        return True
    if max(now / before, before / now) > settings.change_size_ratio:
        return True
    (px, py), (fx, fy) = centre(predicted), centre(face.box)
    if math.hypot(fx - px, fy - py) > settings.change_shift * before:
        return True
    if look is None or track.look is None:
        return False
    return (
        look.similarity(track.look) < settings.change_look_similarity
        or look.colour_distance(track.look) > settings.change_colour_distance
    )


class FaceTracker:
    """Tracks faces of one camera. Not thread-safe: one caller at a time, samples in time order."""

    def __init__(
        self,
        camera: str,
        settings: TrackingSettings,
        *,
        same_person_threshold: float,
        regions: Regions | None = None,
    ) -> None:
        self.camera = camera
        self.settings = settings
        self.regions = regions or Regions(camera)
        #: The same-person gate: below it a face is not the person a track follows.
        self.min_similarity = settings.similarity_gate(same_person_threshold)
        self._tracks: list[Track] = []
        self._next_id = 1
        self._frame_no = 0
        self._last_ts: float | None = None
        self._intervals: deque[float] = deque(maxlen=9)
        self._pending: Association | None = None

    @property
    def tracks(self) -> tuple[Track, ...]:
        """Live tracks (tentative, visible and lost), oldest first."""
        return tuple(self._tracks)

    # ------------------------------------------------------------------ step 1

    def associate(
        self,
        ts: float,
        skipped: int,
        faces: Sequence[Face],
        quality: Sequence[float | None] | None = None,
        vectors: Mapping[int, np.ndarray] | None = None,
        looks: Sequence[FaceLook | None] | None = None,
    ) -> Association:
        """Link faces to tracks on boxes; say which faces to embed (see the module docstring).

        ``ts`` is the sampled frame's time in seconds, ``skipped`` the decoded frames the sampler
        dropped since the previous sample, ``quality`` one figure in [0, 1] per face or None for a
        face that failed the quality gate (tracked but never embedded). ``vectors`` may give some
        faces' vectors already: they are used and not requested. ``looks`` gives each face's
        look when measured (without them, a change of person is noticed on boxes alone).
        """
        if self._pending is not None:
            raise RuntimeError(f"camera {self.camera}: associate() called twice without commit()")
        faces = tuple(faces)
        quality_t = tuple(quality) if quality is not None else (1.0,) * len(faces)
        if len(quality_t) != len(faces):
            raise ValueError(f"camera {self.camera}: {len(faces)} faces but {len(quality_t)} quality figures")
        looks_t = tuple(looks) if looks is not None else (None,) * len(faces)
        if len(looks_t) != len(faces):
            raise ValueError(f"camera {self.camera}: {len(faces)} faces but {len(looks_t)} looks")
        given = {int(i): _normalised(v) for i, v in (vectors or {}).items()}
        self._frame_no += max(0, int(skipped)) + 1

        previous = self._last_ts
        ended = self._expire(ts)
        self._last_ts = ts
        ignored = frozenset(i for i, f in enumerate(faces) if self.regions.masked(f.box))
        live = [i for i in range(len(faces)) if i not in ignored]
        matched, groups, new = self._link(ts, faces, live, previous)

        weights = [face_weight(box_size(f.box), q, self.settings.full_weight_face_px) for f, q in zip(faces, quality_t)]
        requests: list[EmbedRequest] = []

        def want(i: int, track_id: int | None, reason: str | None) -> None:
            if reason is not None and quality_t[i] is not None and i not in given:
                requests.append(EmbedRequest(i, track_id, reason))

        for i, track in matched.items():
            reason = embed_reason(track, weights[i], self.settings)
            if reason is None and self.settings.detect_changes:
                if changed(track, faces[i], looks_t[i], track.predict(ts), self.settings):
                    reason = "changed"
            want(i, track.track_id, reason)
        for g in groups:
            reason = "ambiguous" if bool((g.iou >= self.settings.min_iou).any()) and not g.reacquired else "reid"
            for i in g.faces:
                want(i, None, reason)
        for i in new:
            want(i, None, "new")
        requests.sort(key=lambda r: r.face_index)

        self._pending = Association(
            ts=ts,
            faces=faces,
            quality=quality_t,
            ignored=ignored,
            matched=matched,
            groups=tuple(groups),
            new=tuple(new),
            requests=tuple(requests),
            ended=tuple(ended),
            vectors=given,
            looks=looks_t,
        )
        return self._pending

    @property
    def lost_after_s(self) -> float:
        """How long a track survives unseen: max_lost_s, or two sample intervals (median) if longer."""
        interval = float(np.median(self._intervals)) if self._intervals else 0.0
        return max(self.settings.max_lost_s, MIN_LOST_SAMPLES * interval)

    def _expire(self, ts: float) -> list[Track]:
        if self._last_ts is not None and ts < self._last_ts:
            # Time went backwards: the stream restarted, nothing carries over.
            self._intervals.clear()
            gone, self._tracks = self._tracks, []
        else:
            if self._last_ts is not None and ts > self._last_ts:
                self._intervals.append(ts - self._last_ts)
            limit = self.lost_after_s
            gone = [t for t in self._tracks if ts - t.last_ts > limit]
            self._tracks = [t for t in self._tracks if ts - t.last_ts <= limit]
        return [t for t in gone if t.confirmed]

    def _link(
        self, ts: float, faces: tuple[Face, ...], live: list[int], previous: float | None = None
    ) -> tuple[dict[int, Track], list[_Group], list[int]]:
        tracks = self._tracks
        if not tracks or not live:
            return {}, [], list(live)
        predicted = np.array([t.predict(ts) for t in tracks], dtype=np.float64)
        boxes = np.array([faces[i].box for i in live], dtype=np.float64)
        iou = iou_matrix(predicted, boxes)
        edges = iou >= self.settings.min_iou
        # Distance-only candidates, between faces and tracks that overlap nothing: a face that
        # moved too far for IoU since a track's last sight, to be confirmed by its features.
        near = np.zeros_like(edges)
        lonely_tracks = ~edges.any(axis=1)
        lonely_faces = ~edges.any(axis=0)
        if lonely_tracks.any() and lonely_faces.any() and self.settings.max_distance > 0:
            pc = np.stack([(predicted[:, 0] + predicted[:, 2]) / 2, (predicted[:, 1] + predicted[:, 3]) / 2], axis=1)
            fc = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            dist = np.hypot(pc[:, None, 0] - fc[None, :, 0], pc[:, None, 1] - fc[None, :, 1])
            reach = self.settings.max_distance * np.array([box_size(t.box) for t in tracks])
            near = (dist <= reach[:, None]) & lonely_tracks[:, None] & lonely_faces[None, :]

        matched: dict[int, Track] = {}
        groups: list[_Group] = []
        new: list[int] = []
        for t_idx, f_idx in _components(edges | near):
            if not t_idx:
                new.extend(live[j] for j in f_idx)
            elif len(t_idx) == 1 and len(f_idx) == 1 and edges[t_idx[0], f_idx[0]] and (
                previous is None or tracks[t_idx[0]].last_ts >= previous
            ):
                matched[live[f_idx[0]]] = tracks[t_idx[0]]
            elif f_idx:
                # Boxes alone carry a track from one sample to the next. A track that missed a
                # sample may have left, and someone else stepped into its place (a door, a lane):
                # its face must agree with the track's features before it continues it.
                groups.append(
                    _Group(
                        tracks=tuple(tracks[k] for k in t_idx),
                        faces=tuple(live[j] for j in f_idx),
                        iou=iou[np.ix_(t_idx, f_idx)],
                        near=near[np.ix_(t_idx, f_idx)],
                        reacquired=len(t_idx) == 1 and len(f_idx) == 1,
                    )
                )
        return matched, groups, sorted(new)

    # ------------------------------------------------------------------ step 2

    def commit(self, association: Association, vectors: Mapping[int, np.ndarray] | None = None) -> list[TrackUpdate]:
        """Resolve pending faces with ``vectors`` (face index -> vector), update and create tracks.

        Returns one :class:`TrackUpdate` per face that continues or starts a track, in face order.
        Faces without a vector are linked on boxes alone.
        """
        if association is not self._pending:
            raise RuntimeError(f"camera {self.camera}: commit() of an association that is not the pending one")
        self._pending = None
        vecs = dict(association.vectors)
        vecs.update({int(i): _normalised(v) for i, v in (vectors or {}).items() if v is not None})

        links: dict[int, Track] = dict(association.matched)
        for g in association.groups:
            links.update(self._resolve(g, vecs))
        # A face whose vector disagrees with its track's features is someone else in the same
        # place: the track ends here rather than carry its name (and votes) onto that person.
        split: dict[int, Track] = {}
        for i, track in list(links.items()):
            vector = vecs.get(i)
            if vector is not None and track.feature is not None:
                if float(np.dot(track.feature, vector)) < self.min_similarity:
                    split[i] = links.pop(i)
        for track in split.values():
            self._tracks.remove(track)

        ts = association.ts
        seen: set[int] = set()
        updates: list[TrackUpdate] = []
        for i, face in enumerate(association.faces):
            if i in association.ignored:
                continue
            vector = vecs.get(i)
            track = links.get(i)
            if track is None:
                track = Track(new_event_id(), face.box, ts, self._frame_no)
                self._tracks.append(track)
            else:
                self._move(track, face.box, ts)
            if association.looks:
                track.look = association.looks[i]
            seen.add(id(track))
            was_confirmed = track.confirmed
            if not was_confirmed and track.hits >= self.settings.min_hits:
                track.track_id = self._next_id
                self._next_id += 1
            for zone in self.regions.zones_of(face.box):
                if zone not in track.zones:
                    track.zones.append(zone)
            self._note_embedding(track, vector, association.quality[i], face)
            replaced = split.get(i)
            updates.append(
                TrackUpdate(
                    track, i, face, vector, track.confirmed and not was_confirmed,
                    replaces=replaced if replaced is not None and replaced.confirmed else None,
                )
            )
        # A tentative track missed once was a false detection (or is too unsteady to announce).
        self._tracks = [t for t in self._tracks if t.confirmed or id(t) in seen]
        return updates

    def clear(self) -> list[Track]:
        """End every track (camera stopped); returns the confirmed ones."""
        gone, self._tracks, self._pending = self._tracks, [], None
        return [t for t in gone if t.confirmed]

    # ------------------------------------------------------------------ internals

    def _resolve(self, g: _Group, vecs: Mapping[int, np.ndarray]) -> dict[int, Track]:
        s = self.settings
        gate = self.min_similarity
        cost = np.full((len(g.tracks), len(g.faces)), _GATED)
        for a, track in enumerate(g.tracks):
            for b, face_index in enumerate(g.faces):
                iou = float(g.iou[a, b])
                by_box = iou >= s.min_iou
                if not (by_box or g.near[a, b]):
                    continue
                vector = vecs.get(face_index)
                if vector is None or track.feature is None:
                    if by_box:  # distance-only pairs need features to agree
                        cost[a, b] = 1.0 - iou
                    continue
                similarity = float(np.dot(track.feature, vector))
                if similarity < gate:
                    continue
                agreement = min(1.0, (similarity - gate) / max(1e-6, 1.0 - gate))
                cost[a, b] = 1.0 - (s.iou_weight * iou + s.feature_weight * agreement) / (
                    s.iou_weight + s.feature_weight
                )
        rows, cols = linear_sum_assignment(cost)
        return {g.faces[b]: g.tracks[a] for a, b in zip(rows, cols) if cost[a, b] < _GATED}

    def _move(self, track: Track, box: Box, ts: float) -> None:
        dt = ts - track.last_ts
        if dt > 0:
            (x0, y0), (x1, y1) = centre(track.box), centre(box)
            vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
            if track.hits > 1:
                m = VELOCITY_MOMENTUM
                vx, vy = m * track.velocity[0] + (1 - m) * vx, m * track.velocity[1] + (1 - m) * vy
            track.velocity = (vx, vy)
        track.box = box
        track.last_ts = ts
        track.last_frame = self._frame_no
        track.hits += 1

    def _note_embedding(self, track: Track, vector: np.ndarray | None, quality: float | None, face: Face) -> None:
        if vector is None:
            track.samples_since_embed += 1
            return
        if track.feature is None:
            track.feature = vector
        else:
            m = self.settings.feature_momentum
            track.feature = _normalised(m * track.feature + (1.0 - m) * vector)
        weight = face_weight(box_size(face.box), quality, self.settings.full_weight_face_px)
        weighted = max(weight, 1e-6) * vector
        track.template_sum = weighted if track.template_sum is None else track.template_sum + weighted
        track.embeds += 1
        if not track.identified:
            track.uncertain_embeds += 1
        track.samples_since_embed = 0
        track.best_embed_weight = max(track.best_embed_weight, weight)


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 and math.isfinite(n) else v


def _components(adj: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """Connected components of a bipartite graph (rows = tracks, columns = faces)."""
    n_t, n_f = adj.shape
    parent = list(range(n_t + n_f))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(*np.nonzero(adj)):
        ra, rb = find(int(a)), find(n_t + int(b))
        if ra != rb:
            parent[ra] = rb
    comps: dict[int, tuple[list[int], list[int]]] = {}
    for k in range(n_t + n_f):
        t_idx, f_idx = comps.setdefault(find(k), ([], []))
        (t_idx if k < n_t else f_idx).append(k if k < n_t else k - n_t)
    return list(comps.values())

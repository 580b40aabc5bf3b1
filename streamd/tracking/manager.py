"""One camera's tracking, identity decisions, snapshots and events, behind three calls.

This is what the recognition loop integrates. Per sampled frame of a camera::

    requests = manager.update(frame, faces, quality, looks)  # which faces to embed now
    results = {r.face_index: EmbedResult(vector, matches) for r in requests ...}  # embed + search
    events = manager.observe(frame, results)             # -> list[IdentityEvent] to publish

and when the camera stops or the daemon shuts down::

    events = manager.flush()                             # `end` for every open track

and, from any thread, when people leave the gallery (an index hot reload)::

    manager.forget_labels({"alice"})                     # applied at the next update/observe

- ``faces`` are the detector's faces in ``frame.image`` pixels; ``quality`` one figure per face in
  [0, 1] (higher = larger, sharper, more frontal; it weighs the face in the vote and decides when
  a better face is worth re-embedding), or None for a face that failed the quality gate: it is
  tracked and can continue a track, but is never requested. ``looks`` (optional) are the faces'
  :class:`~streamd.faces.look.FaceLook` figures: a face linked on boxes that no longer looks like
  its track's previous face is requested at once (reason ``changed``).
- ``update`` returns :class:`~streamd.tracking.tracker.EmbedRequest` values (``face_index`` into
  ``faces``, the ``track_id`` when the face continues a confirmed track, and a ``reason``). Faces
  not requested belong to tracks already named with confidence (re-checked every
  ``recheck_every`` samples or on a clearly better face); embedding them anyway is allowed and
  their results are used.
- ``observe`` takes the results keyed by face index: the L2-normalised vector (it disambiguates
  overlapping faces and re-finds lost tracks) and the index's top matches for that vector (they
  vote for the track's name). A face the caller could not embed is simply left out. A vector
  below the same-person gate splits its track: the track ends (``end`` with its name) and the
  face starts a new track, named from its own evidence only.
- Calls for one camera must come in order (update, observe, update, ...) from one thread at a
  time; different cameras' managers are independent. Calling ``update`` again without
  ``observe`` links the previous sample on boxes alone (its events come with the next observe).

- ``search`` (optional) searches the index for one vector: a track the vote leaves unnamed after
  ``min_votes`` faces is then named by its template when the template passes the single-face
  rule (``rec_threshold``, ``margin``; see :func:`~streamd.tracking.identity.with_template`).

- ``forget_labels`` may be called from any thread (the index reloader's): the labels wait in a
  pending set that the next ``update`` or ``observe`` applies on the worker's thread. Every open
  track's votes for them are dropped; a track named as one of them is withdrawn (its decision
  recomputed from the votes left, normally unknown: an ``update`` event with label None comes
  with that sample) and gets a fresh embedding budget; tracks of people still enrolled keep
  their decision. Matches for a forgotten label in the results of an ``observe`` that applies
  it are ignored too: that search may have run on the index before the swap.

The tracker works in stream time (``frame.pts``), so replays faster than real time track as the
video was recorded; events carry wall-clock ``frame.captured_at`` as ``frame_ts``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from streamd.faces.look import FaceLook
from streamd.index.decision import decide as decide_face
from streamd.metrics import Metrics
from streamd.snapshots import SnapshotStore
from streamd.tracking.config import TrackingSettings
from streamd.tracking.events import TrackEvents, TrackState
from streamd.tracking.geometry import Polygon, Regions, box_size
from streamd.tracking.identity import DecisionRules, Observation, clearly_unknown, decide, face_weight, with_template
from streamd.tracking.tracker import Association, EmbedRequest, FaceTracker, Track, TrackUpdate
from streamd.types import Face, Frame, IdentityEvent, Match


class EmbedResult(NamedTuple):
    """What the caller found for one requested face: its vector and the index's top matches."""

    vector: np.ndarray | None
    matches: Sequence[Match] = ()


class TrackManager:
    """Tracker + identity vote + snapshots + events for one camera (see the module docstring)."""

    def __init__(
        self,
        camera: str,
        settings: TrackingSettings,
        *,
        rec_threshold: float,
        same_person_threshold: float,
        margin: float = 0.02,
        search: Callable[[np.ndarray], Sequence[Match]] | None = None,
        zones: Mapping[str, Polygon] | None = None,
        masks: Sequence[Polygon] = (),
        snapshots: SnapshotStore | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.settings = settings
        self.rules = DecisionRules.from_settings(settings, rec_threshold)
        self.rec_threshold = rec_threshold
        self.margin = margin
        # The index search for track templates (None: templates are never searched).
        self._search = search if settings.template else None
        self._clearly_unknown_below = settings.clearly_unknown_threshold(self.rules.min_score)
        self.tracker = FaceTracker(
            camera, settings, same_person_threshold=same_person_threshold, regions=Regions(camera, zones, masks)
        )
        self.events = TrackEvents(camera, clock)
        self._snapshots = snapshots
        self._metrics = metrics
        self._lock = threading.Lock()
        self._pending: tuple[Frame, Association] | None = None
        self._backlog: list[IdentityEvent] = []
        # Labels that left the index, waiting for the worker's thread (see forget_labels).
        self._forget_lock = threading.Lock()
        self._forget: set[str] = set()

    def update(
        self,
        frame: Frame,
        faces: Sequence[Face],
        quality: Sequence[float | None] | None = None,
        looks: Sequence[FaceLook | None] | None = None,
    ) -> list[EmbedRequest]:
        """Link this frame's faces to tracks on boxes; the faces to embed (face order)."""
        with self._lock:
            # This sample's search runs after this point, hence on the index that dropped them.
            self._apply_forget()
            if self._pending is not None:
                self._backlog.extend(self._finish(*self._pending, {}))
            association = self.tracker.associate(frame.pts, frame.skipped, faces, quality, looks=looks)
            self._pending = (frame, association)
            return list(association.requests)

    def observe(
        self, frame: Frame, results: Mapping[int, EmbedResult | tuple[np.ndarray | None, Sequence[Match]]]
    ) -> list[IdentityEvent]:
        """Finish the frame with the embedded faces' results; the events it causes, in order."""
        with self._lock:
            if self._pending is None or self._pending[0] is not frame:
                raise RuntimeError(f"camera {self.camera}: observe() without update() for frame {frame.seq}")
            pending, self._pending = self._pending, None
            events, self._backlog = self._backlog, []
            # The results may come from a search on the index before the swap: ignore their votes
            # for the labels forgotten now.
            forgotten = self._apply_forget()
            found = {int(i): _without(EmbedResult(*r), forgotten) for i, r in results.items()}
            events.extend(self._finish(*pending, found))
            return events

    def expected_boxes(self, ts: float) -> list[tuple[float, float, float, float]]:
        """Where region detection should look for the live tracks' faces at stream time ``ts``: per
        track, the box where its face was last seen and, when it moves, where constant velocity puts
        it (a face that stops is not where velocity says, one that keeps moving is not where it was)."""
        with self._lock:
            out = []
            for track in self.tracker.tracks:
                out.append(track.box)
                ahead = track.predict(ts)
                if ahead != track.box:
                    out.append(ahead)
            return out

    def forget_labels(self, labels: Iterable[str]) -> None:
        """Drop ``labels`` (no longer enrolled) from every open track at the next sample; any thread."""
        labels = set(labels)
        if labels:
            with self._forget_lock:
                self._forget |= labels

    def flush(self, now: float | None = None) -> list[IdentityEvent]:
        """End every track (camera stopped, shutdown): their ``end`` events."""
        with self._lock:
            events, self._backlog = self._backlog, []
            self._pending = None
            for track in self.tracker.clear():
                self._close(track)
            events.extend(self.events.flush(now))
            return events

    def states(self) -> list[TrackState]:
        """The camera's open (announced and not ended) tracks as last reported."""
        with self._lock:
            return [self._state(t) for t in self.tracker.tracks if t.confirmed and t.track_id in self.events.open_tracks]

    # ------------------------------------------------------------------ internals

    def _apply_forget(self) -> frozenset[str]:
        """Apply the pending forgotten labels to every track (under ``self._lock``); those labels."""
        with self._forget_lock:
            if not self._forget:
                return frozenset()
            labels, self._forget = frozenset(self._forget), set()
        for track in self.tracker.tracks:
            track.tally = track.tally.without(labels)
            d = track.decision
            if d is not None and d.known and d.label in labels:
                # Withdrawn: decided afresh from the votes left (no hysteresis for a name that is
                # gone), with a fresh budget so that new evidence on the new index comes soon.
                track.decision = decide(track.tally, None, self.rules)
                track.uncertain_embeds = 0
            elif d is not None and not d.known:
                track.decision = decide(track.tally, d, self.rules)  # a tie with a gone label may resolve
            # Tracks named as someone still enrolled keep their decision as it is.
        return labels

    def _finish(self, frame: Frame, association: Association, results: Mapping[int, EmbedResult]) -> list[IdentityEvent]:
        vectors = {i: r.vector for i, r in results.items() if r.vector is not None}
        updates = self.tracker.commit(association, vectors)
        events: list[IdentityEvent] = []
        for track in association.ended:
            self._close(track)
            end = self.events.end(track.track_id, frame.captured_at) if track.track_id is not None else None
            if end is not None:
                events.append(end)
        for u in updates:
            if u.replaces is not None:
                events.extend(self._split(u.replaces, frame))
            result = results.get(u.face_index)
            if result is not None:
                self._vote(u, result, association.quality[u.face_index], association.ts)
            if u.track.confirmed:
                self._snapshot(frame, u, association.quality[u.face_index])
                events.extend(self.events.observe(self._state(u.track), frame.captured_at))
        return events

    def _split(self, track: Track, frame: Frame) -> list[IdentityEvent]:
        """End ``track``: another person took its place (its ``end`` event, with its name)."""
        self._close(track)
        if self._metrics is not None:
            self._metrics.track_splits.labels(self.camera).inc()
        end = self.events.end(track.track_id, frame.captured_at) if track.track_id is not None else None
        return [end] if end is not None else []

    def _vote(self, u: TrackUpdate, result: EmbedResult, quality: float | None, ts: float) -> None:
        obs = Observation(tuple(result.matches), box_size(u.face.box), 0.0 if quality is None else quality, ts)
        track = u.track
        track.tally = track.tally.add(obs, self.rules)
        track.decision = decide(track.tally, track.decision, self.rules)
        if self._search is not None and not track.decision.known and track.embeds >= self.rules.min_votes:
            template = track.template()
            if template is not None:
                # Searched now, on the index in use now (a reload swaps it before forget_labels).
                found = decide_face(self._search(template), self.rec_threshold, self.margin)
                track.decision = with_template(track.decision, found, track.embeds, self.rules)
        track.clearly_unknown = clearly_unknown(track.tally, self.rules, self._clearly_unknown_below)

    def _snapshot(self, frame: Frame, u: TrackUpdate, quality: float | None) -> None:
        if self._snapshots is None:
            return
        weight = face_weight(box_size(u.face.box), quality, self.settings.full_weight_face_px)
        u.track.snapshot = self._snapshots.offer(self.camera, u.track.uid, frame.image, u.face.box, weight)

    def _close(self, track: Track) -> None:
        if self._snapshots is not None:
            self._snapshots.release(self.camera, track.uid)
        if self._metrics is not None and track.confirmed:
            outcome = track.decision.outcome if track.decision is not None else "unknown"
            self._metrics.decisions.labels(self.camera, outcome).inc()

    @staticmethod
    def _state(track: Track) -> TrackState:
        d = track.decision
        assert track.track_id is not None
        return TrackState(
            track_id=track.track_id,
            box=track.box,
            label=d.label if d else None,
            score=d.score if d else 0.0,
            margin=d.margin if d else 0.0,
            evidence=d.evidence if d else 0,
            first_ts=track.first_ts,
            last_ts=track.last_ts,
            zones=tuple(track.zones),
            snapshot=track.snapshot,
        )


def _without(result: EmbedResult, labels: frozenset[str]) -> EmbedResult:
    """``result`` without its matches for ``labels``."""
    if not labels:
        return result
    return EmbedResult(result.vector, tuple(m for m in result.matches if m.label not in labels))

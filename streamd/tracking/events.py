"""Track state changes of one camera -> ``IdentityEvent`` messages.

:class:`TrackEvents` is a small state machine over successive :class:`TrackState` values of a
camera's confirmed tracks. It guarantees the sequence every consumer relies on:

- ``new`` once, when a track is first reported (label None, or the name when it is already known);
- ``identified`` once, when the track first gets a name (with score, margin and evidence count);
- ``update`` whenever the name changes after that (a corrected name, or withdrawn to unknown);
- ``end`` once, when the track is gone, with its final name and duration.

It keeps the camera's open tracks, so :meth:`TrackEvents.flush` ends every one of them when the
camera stops or the daemon shuts down: every ``new`` has exactly one ``end``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamd.types import IdentityEvent

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id(now: float | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32.

    Ids sort by creation time (to the millisecond) as plain strings and never repeat in practice.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


@dataclass(frozen=True)
class TrackState:
    """What one confirmed track looks like after a sample.

    ``first_ts``/``last_ts`` are the stream times (seconds) of its first and latest sight; their
    difference is the ``end`` event's duration. ``zones`` are the zones it has entered so far.
    """

    track_id: int
    box: tuple[float, float, float, float]
    label: str | None
    score: float
    margin: float
    evidence: int
    first_ts: float
    last_ts: float
    zones: tuple[str, ...] = ()
    snapshot: str | None = None


class TrackEvents:
    """Emits the events of one camera's tracks (see the module docstring). One per camera."""

    def __init__(self, camera: str, clock: Callable[[], float] = time.time) -> None:
        self.camera = camera
        self._clock = clock
        self._open: dict[int, TrackState] = {}
        #: Whether each open track has been named at least once (``identified`` was sent).
        self._named: dict[int, bool] = {}

    @property
    def open_tracks(self) -> tuple[int, ...]:
        """Ids of the tracks that had ``new`` and have not had ``end``."""
        return tuple(self._open)

    def observe(self, state: TrackState, frame_ts: float) -> list[IdentityEvent]:
        """The events this new state of a track causes (possibly none).

        ``frame_ts`` is the wall-clock capture time of the frame the state comes from.
        """
        events: list[IdentityEvent] = []
        previous = self._open.get(state.track_id)
        self._open[state.track_id] = state
        if previous is None:
            self._named[state.track_id] = False
            events.append(self._event("new", state, frame_ts))
            if state.label is None:
                return events
        elif state.label == previous.label:
            return events
        if not self._named[state.track_id]:
            if state.label is None:
                return events
            self._named[state.track_id] = True
            events.append(self._event("identified", state, frame_ts))
        else:
            events.append(self._event("update", state, frame_ts))
        return events

    def end(self, track_id: int, frame_ts: float) -> IdentityEvent | None:
        """The ``end`` event of an open track (None when the track is not open)."""
        state = self._open.pop(track_id, None)
        self._named.pop(track_id, None)
        if state is None:
            return None
        return self._event("end", state, frame_ts, duration_s=max(0.0, state.last_ts - state.first_ts))

    def flush(self, now: float | None = None) -> list[IdentityEvent]:
        """``end`` events for every open track (camera stopped, shutdown)."""
        ts = self._clock() if now is None else now
        events = [self.end(track_id, ts) for track_id in list(self._open)]
        return [e for e in events if e is not None]

    def _event(self, kind: str, s: TrackState, frame_ts: float, duration_s: float | None = None) -> IdentityEvent:
        decided_at = self._clock()
        return IdentityEvent(
            event_id=new_event_id(decided_at),
            type=kind,
            camera=self.camera,
            track_id=s.track_id,
            label=s.label,
            score=s.score,
            margin=s.margin,
            box=s.box,
            frame_ts=frame_ts,
            decided_at=decided_at,
            evidence=s.evidence,
            duration_s=duration_s,
            zones=s.zones,
            snapshot=s.snapshot,
        )

"""TrackEvents: successive track states -> new / identified / update / end."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from streamd.tracking.events import TrackEvents, TrackState, new_event_id


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def state(track_id: int = 1, label: str | None = None, last_ts: float = 0.0, **kw) -> TrackState:
    base = dict(
        track_id=track_id,
        box=(10.0, 20.0, 110.0, 120.0),
        label=label,
        score=0.7 if label else 0.0,
        margin=0.5 if label else 0.0,
        evidence=3 if label else 0,
        first_ts=0.0,
        last_ts=last_ts,
    )
    base.update(kw)
    return TrackState(**base)


def kinds(events) -> list[tuple[str, str | None]]:
    return [(e.type, e.label) for e in events]


def test_new_identified_end_with_duration():
    # given a camera's event emitter
    clock = Clock()
    ev = TrackEvents("door", clock)
    # when a track is seen unknown, then named, then ends 4.6 s after its first sight
    first = ev.observe(state(last_ts=0.2, zones=("hall",), snapshot="door/X-face.jpg"), frame_ts=clock.now - 0.05)
    again = ev.observe(state(last_ts=0.4), frame_ts=clock.now)
    named = ev.observe(state(label="alex", last_ts=0.6), frame_ts=clock.now - 0.1)
    ev.observe(state(label="alex", last_ts=4.6), frame_ts=clock.now)
    end = ev.end(1, frame_ts=clock.now + 2)
    # then new, identified and end come once each, with their fields
    assert kinds(first) == [("new", None)] and again == [] and kinds(named) == [("identified", "alex")]
    assert first[0].zones == ("hall",) and first[0].snapshot == "door/X-face.jpg"
    assert first[0].latency_ms == pytest.approx(50.0)
    i = named[0]
    assert (i.camera, i.track_id, i.score, i.margin, i.evidence, i.box) == ("door", 1, 0.7, 0.5, 3, (10, 20, 110, 120))
    assert end is not None and (end.type, end.label, end.duration_s) == ("end", "alex", pytest.approx(4.6))
    assert ev.open_tracks == ()


def test_a_changed_name_is_an_update_and_withdrawal_too():
    # given a track named alex
    ev = TrackEvents("door", Clock())
    ev.observe(state(), 0.0)
    ev.observe(state(label="alex"), 0.0)
    # when the name is corrected, then withdrawn, then given again
    corrected = ev.observe(state(label="bob"), 0.0)
    withdrawn = ev.observe(state(label=None), 0.0)
    renamed = ev.observe(state(label="bob"), 0.0)
    # then each change is an update (identified is sent once per track)
    assert kinds(corrected + withdrawn + renamed) == [("update", "bob"), ("update", None), ("update", "bob")]


def test_a_track_named_at_its_first_report_gets_new_then_identified():
    # given / when
    events = TrackEvents("door", Clock()).observe(state(label="alex"), 0.0)
    # then
    assert kinds(events) == [("new", "alex"), ("identified", "alex")]


def test_flush_ends_every_open_track_once():
    # given two open tracks and one ended
    clock = Clock()
    ev = TrackEvents("door", clock)
    for track_id in (1, 2, 3):
        ev.observe(state(track_id, last_ts=2.0), 0.0)
    ev.end(2, 0.0)
    # when the camera stops
    events = ev.flush(now=clock.now + 1)
    # then tracks 1 and 3 end, with the flush time as frame time; a second flush has nothing
    assert [(e.type, e.track_id, e.frame_ts) for e in events] == [("end", 1, clock.now + 1), ("end", 3, clock.now + 1)]
    assert ev.flush() == [] and ev.end(1, 0.0) is None


def test_events_of_different_tracks_are_independent():
    # given two tracks
    ev = TrackEvents("door", Clock())
    ev.observe(state(1), 0.0)
    ev.observe(state(2), 0.0)
    # when only track 2 is named / then only track 2 has identified
    assert [(e.type, e.track_id) for e in ev.observe(state(2, label="alex"), 0.0)] == [("identified", 2)]
    assert ev.observe(state(1), 0.0) == []


def test_event_ids_are_ulids_sortable_by_time_and_unique():
    # given ids made at increasing times
    times = [1_700_000_000.0 + k * 0.01 for k in range(200)]
    # when
    ids = [new_event_id(t) for t in times]
    # then each is 26 Crockford base32 characters, they sort as they were made, none repeats
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert len({new_event_id(times[0]) for _ in range(100)}) == 100


def test_event_payload_matches_the_published_fields():
    # given a named track's state
    clock = Clock()
    ev = TrackEvents("door", clock)
    s = replace(state(label="alex", last_ts=3.0), zones=("hall", "desk"))
    # when its events are turned into JSON payloads
    payloads = [e.to_dict() for e in ev.observe(s, clock.now)]
    # then every field the issue names is there
    for p in payloads:
        for key in ("event_id", "camera", "track_id", "label", "score", "margin", "box", "frame_ts", "decided_at",
                    "zones", "snapshot", "evidence"):
            assert key in p
    assert payloads[1]["zones"] == ["hall", "desk"] and payloads[1]["label"] == "alex"

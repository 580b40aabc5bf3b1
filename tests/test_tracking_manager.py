"""TrackManager: the per-camera API the recognition loop calls, with a fake embedder and index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.metrics import Metrics
from streamd.snapshots import SnapshotStore
from streamd.tracking.config import TrackingSettings
from streamd.tracking.manager import EmbedResult, TrackManager
from streamd.types import Face, Frame, IdentityEvent, Match

DT = 0.2
T0 = 1_700_000_000.0
IMAGE = np.full((320, 4200, 3), 128, np.uint8)  # wide: a person id is hidden in x (see FakeGallery)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeGallery:
    """Embeds and searches by a person id hidden in the face's x position (person = x // 1000)."""

    def __init__(self, scores: dict[int, tuple[str, float]]) -> None:
        self.scores = scores
        self.embedded: list[int] = []  # sample number of every embedding

    def results(self, k: int, faces: list[Face], requests) -> dict[int, EmbedResult]:
        out = {}
        for r in requests:
            person = int(faces[r.face_index].box[0]) // 1000
            self.embedded.append(k)
            v = np.zeros(8, np.float32)
            v[person] = 1.0
            label, score = self.scores[person]
            out[r.face_index] = EmbedResult(v, [Match(person, label, score), Match(99, "zz", 0.1)])
        return out


def face(person: int, x: float = 100.0, size: float = 100.0) -> Face:
    x += 1000 * person
    return Face((x, 100.0, x + size, 100.0 + size), 0.9)


def run(
    manager: TrackManager,
    gallery: FakeGallery,
    clock: Clock,
    scenes: list[list[Face]],
    quality: float | None = 0.9,
) -> list[tuple[int, IdentityEvent]]:
    """Feed one frame per scene, 0.2 s apart; the (sample, event) pairs produced."""
    out = []
    for k, faces in enumerate(scenes):
        clock.now = T0 + k * DT + 0.05  # each frame is decided 50 ms after its capture
        frame = Frame("cam", k, k * DT, T0 + k * DT, IMAGE)
        requests = manager.update(frame, faces, [quality] * len(faces))
        out += [(k, e) for e in manager.observe(frame, gallery.results(k, faces, requests))]
    return out


def manager(clock: Clock, **kw) -> TrackManager:
    settings = TrackingSettings(**kw.pop("settings", {}))
    return TrackManager("cam", settings, rec_threshold=0.45, same_person_threshold=0.30, clock=clock, **kw)


def test_enrolled_person_new_identified_end():
    # given an enrolled person in front of the camera for 6 samples (1 s), then gone
    clock, metrics = Clock(), Metrics()
    m = manager(clock, metrics=metrics)
    scenes = [[face(1)]] * 6 + [[]] * 12
    # when the frames are processed
    events = run(m, FakeGallery({1: ("alex", 0.72)}), clock, scenes)
    # then: new at the 2nd sample, identified at the 3rd (3 agreeing votes), end after max_lost_s
    assert [(k, e.type, e.label) for k, e in events] == [(1, "new", None), (2, "identified", "alex"), (16, "end", "alex")]
    identified, end = events[1][1], events[2][1]
    assert (identified.score, identified.evidence, identified.track_id) == (pytest.approx(0.72), 3, 1)
    assert identified.frame_ts == T0 + 2 * DT and identified.latency_ms == pytest.approx(50.0)
    assert end.duration_s == pytest.approx(1.0)
    assert metrics.registry.get_sample_value("streamd_decisions_total", {"camera": "cam", "outcome": "known"}) == 1


def test_never_enrolled_person_is_never_named():
    # given a person whose best gallery match is always under the threshold
    clock, metrics = Clock(), Metrics()
    m = manager(clock, metrics=metrics)
    # when seen for 4 seconds
    events = run(m, FakeGallery({2: ("bob", 0.31)}), clock, [[face(2)]] * 20 + [[]] * 12)
    # then only new and end, both unknown, and the track counted as unknown
    assert [(e.type, e.label) for _, e in events] == [("new", None), ("end", None)]
    assert metrics.registry.get_sample_value("streamd_decisions_total", {"camera": "cam", "outcome": "unknown"}) == 1


def test_named_tracks_are_rechecked_every_k_samples_only():
    # given an enrolled person seen for 30 samples, re-checks every 10
    clock = Clock()
    gallery = FakeGallery({1: ("alex", 0.72)})
    m = manager(clock, settings={"recheck_every": 10})
    # when
    run(m, gallery, clock, [[face(1)]] * 30, quality=0.9)
    # then embedded at samples 0-2 (until named), then once every 10 samples
    assert gallery.embedded == [0, 1, 2, 12, 22]


def test_uncertain_tracks_use_their_budget_then_are_rechecked():
    # given a face whose best match stays just under the 0.45 threshold (a hard face, or a
    # lookalike), a budget of 8 embeddings and re-checks every 5 samples
    clock = Clock()
    gallery = FakeGallery({2: ("bob", 0.40)})
    m = manager(clock, settings={"embed_budget": 8, "recheck_every": 5})
    # when seen for 20 samples
    run(m, gallery, clock, [[face(2)]] * 20)
    # then 8 embeddings in a row, then one every 5 samples
    assert gallery.embedded == list(range(8)) + [12, 17]


def test_clearly_unknown_people_stop_spending_the_budget():
    # given a never-enrolled person whose faces come nowhere near a name (0.2; the cut is two
    # thirds of the 0.45 threshold, 0.30)
    clock = Clock()
    gallery = FakeGallery({2: ("bob", 0.2)})
    m = manager(clock, settings={"embed_budget": 8, "recheck_every": 5})
    # when seen for 20 samples
    events = run(m, gallery, clock, [[face(2)]] * 20)
    # then embedded min_votes (3) times, then re-checked every 5 samples like a named track
    assert gallery.embedded == [0, 1, 2, 7, 12, 17]
    # and never named
    assert not [e for _, e in events if e.type in ("identified", "update") and e.label is not None]


def test_the_clearly_unknown_cut_can_be_set_or_turned_off():
    clock = Clock()
    for below, expected in ((0.1, list(range(8)) + [12, 17]), (-1.0, list(range(8)) + [12, 17]),
                            (0.41, [0, 1, 2, 7, 12, 17])):
        gallery = FakeGallery({2: ("bob", 0.40)} if below != 0.1 else {2: ("bob", 0.2)})
        m = manager(clock, settings={"embed_budget": 8, "recheck_every": 5, "clearly_unknown_below": below})
        run(m, gallery, clock, [[face(2)]] * 20)
        assert gallery.embedded == expected, below


def test_two_people_get_their_own_tracks_and_names():
    # given two enrolled people side by side, one leaving early
    clock = Clock()
    gallery = FakeGallery({1: ("alex", 0.7), 3: ("carol", 0.8)})
    m = manager(clock)
    scenes = [[face(1), face(3)]] * 5 + [[face(3)]] * 5 + [[]] * 12
    # when
    events = run(m, gallery, clock, scenes)
    # then each track is named once and ended once, alex first
    named = {(e.track_id, e.label) for _, e in events if e.type == "identified"}
    ends = [(e.track_id, e.label) for _, e in events if e.type == "end"]
    assert named == {(1, "alex"), (2, "carol")}
    assert ends == [(1, "alex"), (2, "carol")]


def test_masks_and_zones_through_the_manager():
    # given a zone on the left of the picture and a mask on the right
    clock = Clock()
    zone = [(0, 0), (1500, 0), (1500, 400), (0, 400)]
    mask = [(3000, 0), (5000, 0), (5000, 400), (3000, 400)]
    m = manager(clock, zones={"entry": zone}, masks=[mask])
    gallery = FakeGallery({1: ("alex", 0.7), 3: ("carol", 0.8)})
    # when alex stands in the zone and carol in the mask
    events = run(m, gallery, clock, [[face(1), face(3)]] * 4)
    # then carol is never seen and alex's events carry the zone
    assert {e.label for _, e in events if e.type == "identified"} == {"alex"}
    assert all(e.zones == ("entry",) for _, e in events)
    assert all(gallery.embedded.count(k) == 1 for k in range(3))


def test_snapshot_of_the_best_face_is_referenced_by_events(tmp_path: Path):
    # given a snapshot store
    clock = Clock()
    snaps = SnapshotStore(tmp_path, max_bytes=10_000_000, max_age_s=3600, clock=clock)
    m = manager(clock, snapshots=snaps)
    # when a person is seen
    events = run(m, FakeGallery({1: ("alex", 0.7)}), clock, [[face(1)]] * 4)
    # then new and identified reference one face crop that exists, named after the track
    paths = {e.snapshot for _, e in events}
    assert len(paths) == 1
    (path,) = paths
    assert path.startswith("cam/") and path.endswith("-face.jpg") and (tmp_path / path).is_file()


def test_flush_ends_open_tracks_at_shutdown():
    # given two people being tracked
    clock = Clock()
    m = manager(clock)
    run(m, FakeGallery({1: ("alex", 0.7), 3: ("carol", 0.3)}), clock, [[face(1), face(3)]] * 4)
    assert [s.track_id for s in m.states()] == [1, 2]
    # when the camera stops
    events = m.flush(now=T0 + 100)
    # then both tracks end, with their last names, and nothing is left open
    assert [(e.type, e.track_id, e.label, e.frame_ts) for e in events] == [
        ("end", 1, "alex", T0 + 100),
        ("end", 2, None, T0 + 100),
    ]
    assert m.states() == [] and m.flush() == []


def test_update_without_observe_links_the_previous_sample_on_boxes():
    # given a confirmed track
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.7)})
    run(m, gallery, clock, [[face(1)]] * 2)
    # when a frame's observe never comes (its embedding failed), and the next frame comes
    lost = Frame("cam", 2, 2 * DT, T0 + 2 * DT, IMAGE)
    m.update(lost, [face(1, x=110)], [0.9])
    nxt = Frame("cam", 3, 3 * DT, T0 + 3 * DT, IMAGE)
    requests = m.update(nxt, [face(1, x=120)], [0.9])
    events = m.observe(nxt, gallery.results(3, [face(1, x=120)], requests))
    # then the track went on (no new track) and its third vote, from the next frame, names it
    assert [(e.type, e.track_id) for e in events] == [("identified", 1)]
    assert [s.track_id for s in m.states()] == [1]
    assert m.states()[0].box == (1120.0, 100.0, 1220.0, 200.0)


def test_observe_without_update_is_a_programming_error():
    # given / when / then
    m = manager(Clock())
    with pytest.raises(RuntimeError, match=r"camera cam: observe\(\) without update\(\) for frame 7"):
        m.observe(Frame("cam", 7, 0.0, T0, IMAGE), {})


def test_results_may_be_plain_tuples_and_cover_unrequested_faces():
    # given a caller that embeds every face on every sample (the naive loop) with plain tuples
    clock = Clock()
    m = manager(clock)
    v = np.eye(8, dtype=np.float32)[1]
    events = []
    for k in range(3):
        frame = Frame("cam", k, k * DT, T0 + k * DT, IMAGE)
        m.update(frame, [face(1)], [0.9])
        events += m.observe(frame, {0: (v, [Match(1, "alex", 0.7)])})
    # when / then its results are used like requested ones
    assert [(e.type, e.label) for e in events] == [("new", None), ("identified", "alex")]


def test_events_of_a_sample_never_observed_come_with_the_next_observe():
    # given a face seen once (tentative)
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.7)})
    run(m, gallery, clock, [[face(1)]])
    # when the sample that confirms it is never observed
    m.update(Frame("cam", 1, DT, T0 + DT, IMAGE), [face(1)], [0.9])
    nxt = Frame("cam", 2, 2 * DT, T0 + 2 * DT, IMAGE)
    requests = m.update(nxt, [face(1)], [0.9])
    events = m.observe(nxt, gallery.results(2, [face(1)], requests))
    # then its `new` event is not lost: it comes first, with that sample's frame time
    assert [(e.type, e.track_id, e.frame_ts) for e in events] == [("new", 1, T0 + DT)]

"""TrackManager.forget_labels: people removed from the gallery while their tracks are open."""

from __future__ import annotations

import threading

import numpy as np
from test_tracking_manager import DT, IMAGE, T0, Clock, FakeGallery, face, manager, run

from streamd.tracking.identity import DecisionRules, Observation, Tally
from streamd.tracking.manager import EmbedResult
from streamd.types import Frame, IdentityEvent, Match


def step(m, gallery: FakeGallery, clock: Clock, k: int, faces) -> list[IdentityEvent]:  # type: ignore[no-untyped-def]
    """Sample ``k`` (continuing run()'s timeline) through update and observe; its events."""
    clock.now = T0 + k * DT + 0.05
    frame = Frame("cam", k, k * DT, T0 + k * DT, IMAGE)
    requests = m.update(frame, faces, [0.9] * len(faces))
    return m.observe(frame, gallery.results(k, faces, requests))


def test_tally_without_drops_only_the_given_labels_votes():
    # given a tally with votes for two labels and unknown
    rules = DecisionRules(min_score=0.4)
    t = Tally()
    for label, score in [("alex", 0.7), ("alex", 0.7), ("carol", 0.6), ("zz", 0.1)]:
        t = t.add(Observation((Match(1, label, score),), 100.0, 1.0), rules)
    # when alex is forgotten
    left = t.without({"alex", "nobody"})
    # then carol's and unknown's votes are untouched, and a tally without those labels is itself
    assert set(left.labels) == {"carol"} and left.labels["carol"] == t.labels["carol"]
    assert left.unknown == t.unknown and left.observations == 2
    assert t.without({"nobody"}) is t


def test_a_named_person_removed_from_the_gallery_is_withdrawn_at_the_next_sample():
    # given alex named on a track (3 agreeing samples) and still in view
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.72)})
    before = run(m, gallery, clock, [[face(1)]] * 4)
    assert [(e.type, e.label) for _, e in before] == [("new", None), ("identified", "alex")]
    # when alex leaves the index, and the next sample's search no longer finds him
    m.forget_labels({"alex"})
    gallery.scores[1] = ("zz", 0.2)
    events = step(m, gallery, clock, 4, [face(1)])
    # then that very sample withdraws the name: an update with label None on the same track
    assert [(e.type, e.track_id, e.label) for e in events] == [("update", 1, None)]
    assert m.states()[0].label is None


def test_stale_matches_of_a_search_before_the_swap_do_not_name_the_removed_person():
    # given alex named on a track, and a sample whose search ran on the old index (it found alex)
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.72)})
    run(m, gallery, clock, [[face(1)]] * 4)
    clock.now = T0 + 4 * DT
    frame = Frame("cam", 4, 4 * DT, T0 + 4 * DT, IMAGE)
    m.update(frame, [face(1)], [0.9])
    stale = {0: EmbedResult(np.eye(8, dtype=np.float32)[1], [Match(1, "alex", 0.9)])}
    # when the swap lands between that search and observe
    m.forget_labels({"alex"})
    events = m.observe(frame, stale)
    # then the stale vote is ignored and the name is withdrawn with this sample
    assert [(e.type, e.label) for e in events] == [("update", None)]


def test_people_still_enrolled_keep_their_decision_and_lose_only_the_removed_votes():
    # given alex and carol named on their own tracks
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.7), 3: ("carol", 0.8)})
    run(m, gallery, clock, [[face(1), face(3)]] * 4)
    carol = next(t for t in m.tracker.tracks if t.decision and t.decision.label == "carol")
    carol_decision = carol.decision
    # when bob (never seen) and alex leave the index
    m.forget_labels(["bob"])
    m.forget_labels(["alex"])
    gallery.scores[1] = ("zz", 0.2)
    events = step(m, gallery, clock, 4, [face(1), face(3)])
    # then only alex's track changes; carol keeps her name (same decision object) and votes
    assert [(e.type, e.label) for e in events] == [("update", None)]
    assert carol.decision is carol_decision and set(carol.tally.labels) == {"carol"}
    assert {s.label for s in m.states()} == {None, "carol"}


def test_a_withdrawn_track_gets_a_fresh_embedding_budget_and_new_evidence_uses_the_new_index():
    # given alex named, then his gallery entry replaced by carol's (say, he was mislabelled)
    clock = Clock()
    m = manager(clock, settings={"embed_budget": 3, "recheck_every": 50})
    gallery = FakeGallery({1: ("alex", 0.72)})
    run(m, gallery, clock, [[face(1)]] * 6)
    m.forget_labels({"alex"})
    gallery.scores[1] = ("carol", 0.75)
    embedded_before = len(gallery.embedded)
    # when the person stays in view for 4 more samples
    events = []
    for k in range(6, 10):
        events += step(m, gallery, clock, k, [face(1)])
    # then the track is withdrawn, embedded again at once, and named from the new evidence
    assert [(e.type, e.label) for e in events] == [("update", None), ("update", "carol")]
    assert len(gallery.embedded) - embedded_before == 3


def test_forget_labels_from_another_thread_is_applied_by_the_sampling_thread():
    # given a track named alex, and a reloader thread that forgets him while samples flow
    clock = Clock()
    m = manager(clock)
    gallery = FakeGallery({1: ("alex", 0.72)})
    run(m, gallery, clock, [[face(1)]] * 4)
    # when
    thread = threading.Thread(target=m.forget_labels, args=({"alex"},))
    thread.start()
    thread.join()
    gallery.scores[1] = ("zz", 0.2)
    events = step(m, gallery, clock, 4, [face(1)])
    # then the next sample withdraws the name, and later samples never bring it back
    later = [e for k in range(5, 12) for e in step(m, gallery, clock, k, [face(1)])]
    assert [(e.type, e.label) for e in events] == [("update", None)]
    assert all(e.label is None for e in later)

"""FaceTracker: association across samples with hand-made boxes and vectors."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.errors import ConfigError
from streamd.tracking.config import TrackingSettings
from streamd.tracking.geometry import Regions
from streamd.tracking.identity import TrackDecision
from streamd.tracking.tracker import FaceTracker, Track, embed_reason
from streamd.types import Face

DT = 0.2  # 5 samples per second


def face(x: float, y: float = 100.0, size: float = 100.0) -> Face:
    return Face((x, y, x + size, y + size), 0.9)


def unit(k: int, dim: int = 16) -> np.ndarray:
    """A distinct unit vector per person k (orthogonal: cosine 0 between people)."""
    v = np.zeros(dim, np.float32)
    v[k] = 1.0
    return v


def tracker(**kw) -> FaceTracker:
    return FaceTracker("cam", TrackingSettings(**kw), same_person_threshold=0.30)


def step(t: FaceTracker, ts: float, faces: list[Face], vectors: dict[int, np.ndarray] | None = None):
    association = t.associate(ts, 0, faces)
    return association, t.commit(association, vectors)


def ids(updates) -> list[int | None]:
    return [u.track.track_id for u in updates]


def known(label: str) -> TrackDecision:
    return TrackDecision("known", label, 0.8, 0.9, 5, 5, "agreed")


def test_moving_face_keeps_its_id_and_is_confirmed_at_the_second_sample():
    # given a face moving right by 30 px per sample (a third of its width)
    t = tracker()
    # when it is tracked over 10 samples
    seen = [ids(step(t, k * DT, [face(100 + 30 * k)])[1]) for k in range(10)]
    # then it is tentative at first, then one confirmed track throughout
    assert seen[0] == [None]
    assert seen[1:] == [[1]] * 9
    assert len(t.tracks) == 1


def test_motion_prediction_follows_a_face_that_outruns_its_box():
    # given a face moving 50 px per sample (250 px/s), then 80 px per sample
    t = tracker(min_iou=0.2)
    step(t, 0.0, [face(100)])
    step(t, DT, [face(150)])
    # when consecutive boxes overlap by IoU 0.11 only (under min_iou) but the predicted ones do not
    _, u = step(t, 2 * DT, [face(230)])
    _, u2 = step(t, 3 * DT, [face(310)])
    # then the id is kept
    assert ids(u) == ids(u2) == [1]


def test_without_motion_prediction_the_same_face_would_be_lost(monkeypatch):
    # given the same face, with prediction switched off
    monkeypatch.setattr("streamd.tracking.tracker.MAX_PREDICTION_S", 0.0)
    t = tracker(min_iou=0.2)
    step(t, 0.0, [face(100)])
    step(t, DT, [face(150)])
    # when / then the face that outran its box starts a new track
    assert ids(step(t, 2 * DT, [face(230)])[1]) == [None]


@pytest.mark.parametrize(
    ("gap_s", "same_track"),
    [(0.4, True), (1.8, True), (2.2, False), (5.0, False)],
)
def test_missed_detections_are_tolerated_for_max_lost_s(gap_s: float, same_track: bool):
    # given a confirmed track of a still face, max_lost_s = 2
    t = tracker(max_lost_s=2.0)
    step(t, 0.0, [face(100)])
    step(t, DT, [face(100)])
    # when the face is missed for gap_s seconds (empty samples every 0.2 s), then seen at the same place
    ended = []
    for k in range(1, round(gap_s / DT)):
        ended += step(t, DT + k * DT, [])[0].ended
    association, updates = step(t, DT + gap_s, [face(100)])
    ended += association.ended
    # then within max_lost_s it keeps its id; beyond it the old track ended and a new one starts
    if same_track:
        assert ids(updates) == [1] and ended == []
    else:
        assert ids(updates) == [None]
        assert [tr.track_id for tr in ended] == [1]


def test_a_lost_track_ends_once_max_lost_s_has_passed():
    # given a confirmed track
    t = tracker(max_lost_s=1.0)
    step(t, 0.0, [face(100)])
    step(t, DT, [face(100)])
    # when no face is seen for a bit more than max_lost_s
    a1, _ = step(t, 1.0, [])
    a2, _ = step(t, 1.3, [])
    # then the track is still alive at 0.8 s without sight and ends at 1.1 s
    assert a1.ended == ()
    assert [tr.track_id for tr in a2.ended] == [1]
    assert t.tracks == ()


def test_one_frame_false_detection_never_becomes_a_track():
    # given a face seen in a single sample
    t = tracker(min_hits=2)
    step(t, 0.0, [face(100)])
    # when the next sample has nothing
    association, updates = step(t, DT, [])
    # then the tentative track is dropped silently (no id, nothing ended)
    assert t.tracks == () and association.ended == () and updates == []


def test_track_ids_count_per_camera_without_gaps_from_dropped_tentatives():
    # given two trackers (two cameras) and a false detection on the first
    a, b = tracker(), tracker()
    step(a, 0.0, [face(500)])
    step(a, DT, [])
    # when each then confirms one face
    for t in (a, b):
        step(t, 1.0, [face(100)])
        _, u = step(t, 1.0 + DT, [face(100)])
        # then each camera's first track is id 1
        assert ids(u) == [1]


def test_faces_that_swap_places_keep_their_ids_thanks_to_features():
    # given two people side by side, tracked with their vectors
    t = tracker()
    for k in range(2):
        step(t, k * DT, [face(100), face(150)], {0: unit(0), 1: unit(1)})
    # when they swap places between two samples (person 0 now at x=150)
    association, updates = step(t, 2 * DT, [face(100), face(150)], {0: unit(1), 1: unit(0)})
    # then both faces were in one overlapping group and each keeps its person's id
    assert [g.faces for g in association.groups] == [(0, 1)]
    by_face = {u.face_index: u.track.track_id for u in updates}
    assert by_face == {0: 2, 1: 1}


def test_faces_that_swap_places_swap_ids_on_boxes_alone():
    # given the same scene without any vectors (the caller embedded nothing)
    t = tracker()
    for k in range(2):
        step(t, k * DT, [face(100), face(150)])
    # when they swap places
    association, updates = step(t, 2 * DT, [face(100), face(150)])
    # then the tracker asked for both faces (ambiguous) and, not given them, linked by boxes
    assert [(r.face_index, r.reason) for r in association.requests] == [(0, "ambiguous"), (1, "ambiguous")]
    assert {u.face_index: u.track.track_id for u in updates} == {0: 1, 1: 2}


def test_crossing_faces_keep_their_ids_by_motion_prediction():
    # given two faces walking towards each other at 40 px per sample
    t = tracker()
    history: dict[int, list[int | None]] = {0: [], 1: []}
    # when they cross (their boxes overlap for several samples)
    for k in range(12):
        _, updates = step(t, k * DT, [face(100 + 40 * k), face(600 - 40 * k)])
        for u in updates:
            history[u.face_index].append(u.track.track_id)
    # then the face moving right is track 1 and the one moving left track 2 throughout
    assert history[0][1:] == [1] * 11
    assert history[1][1:] == [2] * 11


def test_a_lost_face_reappearing_far_away_is_re_found_by_its_features():
    # given a confirmed track of person 3, with features
    t = tracker(max_distance=3.0)
    for k in range(2):
        step(t, k * DT, [face(100)], {0: unit(3)})
    step(t, 2 * DT, [])
    # when the face reappears 200 px away (no overlap) with the same person's vector
    association, updates = step(t, 3 * DT, [face(300)], {0: unit(3)})
    # then it was a re-id candidate and continues track 1
    assert [g.faces for g in association.groups] == [(0,)]
    assert ids(updates) == [1]


def test_a_different_person_near_a_lost_track_starts_a_new_track():
    # given a confirmed track of person 3
    t = tracker(max_distance=3.0)
    for k in range(2):
        step(t, k * DT, [face(100)], {0: unit(3)})
    # when another person (orthogonal vector) appears 200 px away
    _, updates = step(t, 2 * DT, [face(300)], {0: unit(4)})
    # then the features disagree: a new tentative track, track 1 is lost but alive
    assert ids(updates) == [None]
    assert [tr.track_id for tr in t.tracks] == [1, None]


def test_someone_else_stepping_into_a_lost_tracks_place_starts_a_new_track():
    # given a confirmed track of person 3 at x=100, then a sample where nobody is seen (person 3 left)
    t = tracker(max_lost_s=2.0)
    for k in range(2):
        step(t, k * DT, [face(100)], {0: unit(3)})
    step(t, 2 * DT, [])
    # when a face appears where person 3 was: its box alone would continue track 1
    association, _ = step(t, 3 * DT, [face(100)], {0: unit(4)})
    # then the tracker asks for its features (a missed sample breaks box-only continuation) ...
    assert [(r.face_index, r.reason) for r in association.requests] == [(0, "reid")]
    # ... and, as they are another person's, starts a new track: track 1 stays lost
    assert [tr.track_id for tr in t.tracks] == [1, None]


def test_the_same_person_back_in_a_lost_tracks_place_continues_it():
    t = tracker(max_lost_s=2.0)
    for k in range(2):
        step(t, k * DT, [face(100)], {0: unit(3)})
    step(t, 2 * DT, [])
    _, updates = step(t, 3 * DT, [face(100)], {0: unit(3)})
    assert ids(updates) == [1]
    # and without features (the face failed the quality gate) boxes still decide
    step(t, 4 * DT, [])
    _, updates = step(t, 5 * DT, [face(100)])
    assert ids(updates) == [1]


def test_without_features_a_distant_face_is_a_new_track():
    # given a confirmed track
    t = tracker(max_distance=3.0)
    for k in range(2):
        step(t, k * DT, [face(100)])
    # when a face appears 200 px away and the caller embeds nothing
    _, updates = step(t, 2 * DT, [face(300)])
    # then distance alone never links it
    assert ids(updates) == [None]


def test_faces_in_masks_are_ignored_and_zones_are_recorded():
    # given a mask over the left of the picture and two zones
    regions = Regions(
        "cam",
        zones={"door": [(0, 0), (400, 0), (400, 720), (0, 720)], "desk": [(400, 0), (1280, 0), (1280, 720), (400, 720)]},
        masks=[[(0, 0), (200, 0), (200, 720), (0, 720)]],
    )
    t = FaceTracker("cam", TrackingSettings(), same_person_threshold=0.30, regions=regions)
    # when a face sits in the mask and another walks from the door zone into the desk zone
    seen = []
    for k in range(6):
        association, updates = step(t, k * DT, [face(20), face(250 + 40 * k)])
        seen.append((association.ignored, [u.face_index for u in updates]))
    # then the masked face is never tracked, nor requested, and the zones entered are kept in order
    assert all(ignored == frozenset({0}) and faces == [1] for ignored, faces in seen)
    assert [tr.zones for tr in t.tracks] == [["door", "desk"]]


@pytest.mark.parametrize(
    ("zones", "masks", "message"),
    [
        ({"door": [(0, 0), (10, 0)]}, [], "camera cam: zone 'door': a polygon needs at least 3 points, got 2"),
        ({"door": [(0, 0), (10, "x"), (5, 5)]}, [], "camera cam: zone 'door': a polygon is a list of [x, y] pixel points"),
        ({}, [[(0, 0), (1, 1), (2, 2)], [1, 2, 3]], "camera cam: mask 2: a polygon is a list of [x, y] pixel points"),
        ({}, [[(0, 0, 1), (1, 1), (2, 2)]], "camera cam: mask 1: a polygon is a list of [x, y] pixel points"),
    ],
)
def test_bad_polygons_are_refused_naming_camera_and_zone(zones, masks, message):
    # given / when / then
    with pytest.raises(ConfigError) as err:
        Regions("cam", zones, masks)
    assert str(err.value) == message


def test_confident_tracks_are_embedded_every_k_samples_only():
    # given a track named with confidence, re-checked every 4 samples
    t = tracker(recheck_every=4, embed_budget=3)
    requested = []
    for k in range(14):
        association = t.associate(k * DT, 0, [face(100)], [0.8])
        wanted = [r.reason for r in association.requests]
        requested.append(wanted[0] if wanted else None)
        t.commit(association, {r.face_index: unit(0) for r in association.requests})
        if k == 2:
            t.tracks[0].decision = known("alex")  # the identity vote named it after 3 embeddings
    # when / then: new, uncertain x2 while unnamed, then one re-check every 4th sample
    assert requested == ["new", "uncertain", "uncertain", None, None, None, "recheck"] + [None] * 3 + [
        "recheck"
    ] + [None] * 3


def test_uncertain_tracks_are_embedded_within_their_budget_then_rechecked():
    # given a track that never gets named, a budget of 5 and re-checks every 3 samples
    t = tracker(recheck_every=3, embed_budget=5)
    reasons = []
    for k in range(12):
        association = t.associate(k * DT, 0, [face(100)], [0.8])
        reasons.append(association.requests[0].reason if association.requests else None)
        t.commit(association, {r.face_index: unit(0) for r in association.requests})
    # when / then: 5 embeddings in a row, then every 3rd sample
    assert reasons == ["new"] + ["uncertain"] * 4 + [None, None, "recheck", None, None, "recheck", None]


def test_a_clearly_better_face_is_embedded_before_the_recheck():
    # given a named track whose embedded faces had quality 0.4
    t = tracker(recheck_every=100, better_face_ratio=1.3)
    for k in range(2):
        association = t.associate(k * DT, 0, [face(100)], [0.4])
        t.commit(association, {0: unit(0)})
    t.tracks[0].decision = known("alex")
    # when faces of quality 0.5 (x1.25), then 0.6 (x1.5) come
    a1 = t.associate(2 * DT, 0, [face(100)], [0.5])
    t.commit(a1)
    a2 = t.associate(3 * DT, 0, [face(100)], [0.6])
    t.commit(a2, {0: unit(0)})
    a3 = t.associate(4 * DT, 0, [face(100)], [0.6])
    # then only the 0.6 face is requested, and once embedded the same quality is not again
    assert a1.requests == ()
    assert [(r.track_id, r.reason) for r in a2.requests] == [(1, "better_face")]
    assert a3.requests == ()


def test_faces_that_failed_the_quality_gate_are_tracked_but_never_requested():
    # given a face whose quality is None (rejected by the gate)
    t = tracker()
    for k in range(3):
        association = t.associate(k * DT, 0, [face(100)], [None])
        # when / then it is never requested but still makes a confirmed track
        assert association.requests == ()
        updates = t.commit(association)
    assert ids(updates) == [1]


@pytest.mark.parametrize(
    ("identified", "uncertain_embeds", "since", "weight", "best", "expected"),
    [
        (False, 0, 0, 0.5, 0.0, "uncertain"),
        (False, 7, 0, 0.5, 0.9, "uncertain"),
        (False, 8, 0, 0.5, 0.9, None),
        (False, 8, 9, 0.5, 0.9, "recheck"),
        (True, 0, 0, 0.5, 0.5, None),
        (True, 0, 8, 0.5, 0.5, None),
        (True, 0, 9, 0.1, 0.5, "recheck"),
        (True, 0, 0, 0.65, 0.5, "better_face"),
        (True, 0, 0, 0.64, 0.5, None),
        (True, 0, 0, 0.1, 0.0, "better_face"),
        (True, 0, 0, 0.0, 0.0, None),
    ],
)
def test_embed_reason_table(identified, uncertain_embeds, since, weight, best, expected):
    # given a track in some embedding state (K=10, budget=8, ratio=1.3)
    track = Track("uid", (0, 0, 100, 100), 0.0, 0)
    track.decision = known("alex") if identified else None
    track.uncertain_embeds, track.samples_since_embed, track.best_embed_weight = uncertain_embeds, since, best
    # when / then
    assert embed_reason(track, weight, TrackingSettings(recheck_every=10, embed_budget=8, better_face_ratio=1.3)) == expected


def test_time_going_backwards_ends_every_track():
    # given a confirmed track
    t = tracker()
    step(t, 10.0, [face(100)])
    step(t, 10.2, [face(100)])
    # when the stream restarts and its time starts again at 0
    association, updates = step(t, 0.0, [face(100)])
    # then the old track ended and the face starts afresh
    assert [tr.track_id for tr in association.ended] == [1]
    assert ids(updates) == [None]


def test_skipped_frames_count_in_the_decoded_frame_numbers():
    # given samples taken every 5th decoded frame (4 skipped)
    t = tracker()
    for k in range(3):
        t.commit(t.associate(k * DT, 0 if k == 0 else 4, [face(100)]))
    # when / then the track spans decoded frames 1 to 11
    assert (t.tracks[0].first_frame, t.tracks[0].last_frame) == (1, 11)


def test_associate_twice_without_commit_is_a_programming_error():
    # given an association not committed
    t = tracker()
    t.associate(0.0, 0, [face(100)])
    # when / then
    with pytest.raises(RuntimeError, match="camera cam: associate\\(\\) called twice without commit\\(\\)"):
        t.associate(0.2, 0, [face(100)])


def test_quality_figures_must_match_the_faces():
    # given / when / then
    with pytest.raises(ValueError, match="camera cam: 2 faces but 1 quality figures"):
        tracker().associate(0.0, 0, [face(100), face(400)], [0.5])


def test_at_low_sample_rates_a_track_survives_two_sample_intervals():
    # given samples every 1.5 s (keyframes only) and max_lost_s = 2
    t = tracker(max_lost_s=2.0)
    for k in range(3):
        step(t, k * 1.5, [face(100)])
    # when one sample misses the face (3 s unseen at the next one, over max_lost_s)
    step(t, 4.5, [])
    association, updates = step(t, 6.0, [face(100)])
    # then the track lives on: the limit is two intervals (3 s)
    assert t.lost_after_s == pytest.approx(3.0)
    assert association.ended == () and ids(updates) == [1]

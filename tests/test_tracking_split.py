"""A track never carries a name to another person: change detection between embeddings and the split rule.

Hand-made tracks: one person leaves a spot as another steps into it (a hand-off), with their own
vectors and looks, through the FaceTracker and the TrackManager.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamd.faces.look import THUMB_SIDE, FaceLook, face_look
from streamd.metrics import Metrics
from streamd.tracking.config import TrackingSettings
from streamd.tracking.identity import TrackDecision
from streamd.tracking.manager import EmbedResult, TrackManager
from streamd.tracking.tracker import FaceTracker, changed
from streamd.types import Face, Frame, Match

DT = 0.2
T0 = 1_700_000_000.0
IMAGE = np.full((720, 1280, 3), 128, np.uint8)
GATE = 0.40


def face(x: float = 500.0, y: float = 200.0, size: float = 100.0) -> Face:
    return Face((x, y, x + size, y + size), 0.9)


def vector(person: int, dim: int = 16, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Person ``person``'s unit vector (orthogonal to other people's), optionally a little noisy."""
    v = np.zeros(dim, np.float32)
    v[person] = 1.0
    if noise:
        v += np.random.default_rng(seed).normal(0, noise, dim).astype(np.float32)
    return v / np.linalg.norm(v)


def look(person: int, colour: float = 120.0) -> FaceLook:
    """A look per person: a thumbnail of its own (random, seeded by the person) and a mean colour."""
    thumb = np.random.default_rng(person).normal(size=THUMB_SIDE * THUMB_SIDE).astype(np.float32)
    thumb -= thumb.mean()
    return FaceLook(thumb / np.linalg.norm(thumb), (colour, colour, colour))


def named(label: str) -> TrackDecision:
    return TrackDecision("known", label, 0.8, 0.9, 5, 5, "agreed")


# --------------------------------------------------------------------------- change detection


@pytest.mark.parametrize(
    ("new_face", "new_look", "is_change"),
    [
        (face(), look(1), False),  # the same face, where the motion model puts it
        (face(x=505.0, size=104.0), look(1), False),  # a little jitter
        (face(size=140.0), look(1), True),  # size jumped by 1.4x
        (face(x=570.0), look(1), True),  # 0.7 face sizes off the predicted position
        (face(), look(2), True),  # another grey layout
        (face(), look(1, colour=180.0), True),  # another skin tone or light
        (face(), None, False),  # look not measured: boxes alone
    ],
)
def test_a_face_that_no_longer_looks_like_its_track_counts_as_changed(new_face, new_look, is_change):
    # given a still track whose last face had look(1)
    t = FaceTracker("cam", TrackingSettings(), same_person_threshold=GATE)
    t.commit(t.associate(0.0, 0, [face()], looks=[look(1)]))
    track = t.tracks[0]
    # when / then
    assert changed(track, new_face, new_look, track.predict(DT), t.settings) is is_change


def test_a_named_track_whose_face_changes_is_embedded_at_once():
    # given a named track linked on boxes alone (no re-check due for 10 samples)
    t = FaceTracker("cam", TrackingSettings(min_hits=1), same_person_threshold=GATE)
    t.commit(t.associate(0.0, 0, [face()], looks=[look(1)]), {0: vector(1)})
    t.tracks[0].decision = named("alex")
    same = t.associate(DT, 0, [face()], looks=[look(1)])
    assert same.requests == ()
    t.commit(same)
    # when someone else's face takes its place
    other = t.associate(2 * DT, 0, [face()], looks=[look(2)])
    # then it is requested, with the reason
    assert [(r.face_index, r.reason) for r in other.requests] == [(0, "changed")]


def test_change_detection_can_be_switched_off():
    # given the same hand-off with detect_changes off
    t = FaceTracker("cam", TrackingSettings(min_hits=1, detect_changes=False), same_person_threshold=GATE)
    t.commit(t.associate(0.0, 0, [face()], looks=[look(1)]), {0: vector(1)})
    t.tracks[0].decision = named("alex")
    # when / then nothing is embedded before the re-check
    assert t.associate(DT, 0, [face()], looks=[look(2)]).requests == ()


# --------------------------------------------------------------------------- the split rule


def test_a_face_below_the_same_person_gate_splits_its_track():
    # given a confirmed, named track of person 1
    t = FaceTracker("cam", TrackingSettings(), same_person_threshold=GATE)
    for k in range(3):
        t.commit(t.associate(k * DT, 0, [face()]), {0: vector(1)})
    old = t.tracks[0]
    old.decision = named("alex")
    assert old.track_id == 1
    # when person 2's vector comes for the face in its place
    updates = t.commit(t.associate(3 * DT, 0, [face()]), {0: vector(2)})
    # then the old track is gone, the face starts a new (tentative) track with no votes or name
    (u,) = updates
    assert u.replaces is old and u.track is not old
    assert u.track.track_id is None and u.track.decision is None and u.track.tally.observations == 0
    assert t.tracks == (u.track,)
    # and the new track is confirmed at its next sample, with the camera's next id
    (u2,) = t.commit(t.associate(4 * DT, 0, [face()]), {0: vector(2)})
    assert u2.track is u.track and u2.track.track_id == 2 and u2.replaces is None


def test_the_same_person_with_a_noisy_face_does_not_split():
    # given a confirmed track of person 1
    t = FaceTracker("cam", TrackingSettings(), same_person_threshold=GATE)
    for k in range(3):
        t.commit(t.associate(k * DT, 0, [face()]), {0: vector(1)})
    old = t.tracks[0]
    # when a noisy face of the same person comes (similarity well above the gate)
    noisy = vector(1, noise=0.15, seed=3)
    assert float(np.dot(old.feature, noisy)) > GATE
    (u,) = t.commit(t.associate(3 * DT, 0, [face()]), {0: noisy})
    # then it continues the track
    assert u.track is old and u.replaces is None


def test_a_tentative_track_that_splits_ends_silently():
    # given a tentative track (seen once)
    t = FaceTracker("cam", TrackingSettings(min_hits=3), same_person_threshold=GATE)
    t.commit(t.associate(0.0, 0, [face()]), {0: vector(1)})
    # when another person's face comes in its place
    (u,) = t.commit(t.associate(DT, 0, [face()]), {0: vector(2)})
    # then a new track starts and nothing is reported as replaced (the old one was never announced)
    assert u.replaces is None and len(t.tracks) == 1 and u.track.hits == 1


# --------------------------------------------------------------------------- the hand-off, end to end


class HandOff:
    """Person 1 ("alex") stands at a spot for 8 samples; person 2 ("bob") takes the very same box."""

    def __init__(self, second_label: str = "bob", second_score: float = 0.7) -> None:
        self.people = [1] * 8 + [2] * 10
        self.labels = {1: ("alex", 0.72), 2: (second_label, second_score)}

    def run(self, manager: TrackManager) -> list[tuple[int, object]]:
        events = []
        for k, person in enumerate(self.people + [0] * 12):
            frame = Frame("cam", k, k * DT, T0 + k * DT, IMAGE)
            faces = [face()] if person else []
            looks = [look(person)] if person else []
            requests = manager.update(frame, faces, [0.9] * len(faces), looks)
            results = {}
            for r in requests:
                label, score = self.labels[person]
                results[r.face_index] = EmbedResult(vector(person), [Match(person, label, score), Match(9, "zz", 0.1)])
            events += [(k, e) for e in manager.observe(frame, results)]
        return events


def handoff_manager(metrics: Metrics | None = None, **settings) -> TrackManager:
    return TrackManager(
        "cam", TrackingSettings(**settings), rec_threshold=0.45, same_person_threshold=GATE, metrics=metrics,
        clock=lambda: T0,
    )


def test_a_hand_off_ends_the_first_track_with_its_name_and_names_the_second_from_its_own_faces():
    # given alex named, then bob stepping into his box between two re-checks
    metrics = Metrics()
    # when
    events = HandOff().run(handoff_manager(metrics))
    # then alex's track ends with his name at the sample bob appears; bob's new track is named bob
    seen = [(k, e.type, e.track_id, e.label) for k, e in events]
    assert seen == [
        (1, "new", 1, None),
        (2, "identified", 1, "alex"),
        (8, "end", 1, "alex"),
        (9, "new", 2, None),
        (10, "identified", 2, "bob"),
        (28, "end", 2, "bob"),
    ]
    assert metrics.registry.get_sample_value("streamd_track_splits_total", {"camera": "cam"}) == 1


def test_a_stranger_stepping_into_a_named_track_is_never_shown_under_that_name():
    # given alex named, then a never-enrolled person in his box (best match far under the threshold)
    events = HandOff(second_label="alex", second_score=0.2).run(handoff_manager())
    # then no event after the hand-off carries alex's name on the stranger's track
    after = [(e.type, e.track_id, e.label) for k, e in events if k >= 8]
    assert after[0] == ("end", 1, "alex")
    assert all(label is None for kind, track, label in after[1:])


def test_without_change_detection_the_split_waits_for_the_recheck():
    # given the same hand-off with detect_changes off: the name is carried until the re-check
    events = HandOff().run(handoff_manager(detect_changes=False))
    ends = [(k, e.label) for k, e in events if e.type == "end"]
    # then alex's track still ends, but only at the re-check that embeds bob's face
    assert ends[0][1] == "alex" and ends[0][0] > 8


# --------------------------------------------------------------------------- the look itself


def test_face_look_is_brightness_invariant_and_tells_layouts_apart():
    # given a face-like pattern and the same pattern brighter, and another pattern
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (200, 200, 3), dtype=np.uint8)
    brighter = np.clip(image.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    box = (50.0, 50.0, 150.0, 150.0)
    a, b = face_look(image, box), face_look(brighter, box)
    other = face_look(image[::-1].copy(), box)
    # when / then
    assert a is not None and b is not None and other is not None
    assert a.similarity(b) > 0.99
    assert a.colour_distance(b) == pytest.approx(40.0 * np.sqrt(3), rel=0.05)
    assert a.similarity(other) < 0.5


def test_face_look_of_an_empty_box_is_none():
    assert face_look(IMAGE, (10.0, 10.0, 12.0, 40.0)) is None
    assert face_look(IMAGE, (1300.0, 10.0, 1400.0, 40.0)) is None

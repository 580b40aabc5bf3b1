"""The track template: a track the vote leaves unnamed is named by the mean of its face vectors ("vote, else template")."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.tracking.config import TrackingSettings
from streamd.tracking.identity import DecisionRules, TrackDecision, with_template
from streamd.tracking.manager import EmbedResult, TrackManager
from streamd.types import Decision, Face, Frame, Match

DT = 0.2
T0 = 1_700_000_000.0
IMAGE = np.full((480, 640, 3), 128, np.uint8)
RULES = DecisionRules(min_score=0.45)

#: The gallery: one unit vector per enrolled person.
ALEX = np.eye(8, dtype=np.float32)[0]
BOB = np.eye(8, dtype=np.float32)[1]
GALLERY = {"alex": ALEX, "bob": BOB}


def mix(a: np.ndarray, b: np.ndarray, share_b: float) -> np.ndarray:
    v = (1 - share_b) * a + share_b * b
    return (v / np.linalg.norm(v)).astype(np.float32)


def search(vector: np.ndarray) -> list[Match]:
    """A flat index over GALLERY: cosine to each person, best first."""
    hits = [Match(k, label, float(np.dot(vector, v))) for k, (label, v) in enumerate(GALLERY.items())]
    return sorted(hits, key=lambda m: m.score, reverse=True)


def unknown_vote(reason: str = "thin_evidence") -> TrackDecision:
    return TrackDecision("unknown", None, 0.5, -0.1, 1, 3, reason, "alex")


@pytest.mark.parametrize(
    ("vote", "template", "faces", "outcome", "label", "reason"),
    [
        (unknown_vote(), Decision("alex", 0.6, 0.5, "known"), 3, "known", "alex", "template"),
        (unknown_vote("mostly_unknown"), Decision("alex", 0.6, 0.5, "known"), 4, "known", "alex", "template"),
        (unknown_vote(), Decision("alex", 0.6, 0.5, "known"), 2, "unknown", None, "thin_evidence"),  # too few faces
        (unknown_vote(), Decision(None, 0.4, 0.3, "below_threshold"), 3, "unknown", None, "thin_evidence"),
        (TrackDecision("tie", None, 0.6, 0.1, 3, 6, "tie", "bob"), Decision("alex", 0.6, 0.5, "known"), 6,
         "tie", None, "tie"),  # a tie between two names stays a tie
        (TrackDecision("known", "bob", 0.7, 0.6, 3, 3, "agreed"), Decision("alex", 0.6, 0.5, "known"), 3,
         "known", "bob", "agreed"),  # the vote's name stands
    ],
)
def test_vote_else_template(vote, template, faces, outcome, label, reason):
    # given / when
    d = with_template(vote, template, faces, RULES)
    # then
    assert (d.outcome, d.label, d.reason) == (outcome, label, reason)


def run(manager: TrackManager, vectors: list[np.ndarray]) -> list[tuple[int, str, str | None]]:
    """One face at a fixed place per sample, with the given vectors; the (sample, type, label) events."""
    out = []
    for k, v in enumerate(vectors + [None] * 12):  # type: ignore[list-item]
        frame = Frame("cam", k, k * DT, T0 + k * DT, IMAGE)
        faces = [Face((100.0, 100.0, 200.0, 200.0), 0.9)] if v is not None else []
        requests = manager.update(frame, faces, [0.9] * len(faces))
        results = {r.face_index: EmbedResult(v, search(v)) for r in requests}
        out += [(k, e.type, e.label) for e in manager.observe(frame, results)]
    return out


def manager(**settings) -> TrackManager:
    return TrackManager("cam", TrackingSettings(embed_budget=3, **settings), rec_threshold=0.45,
                        same_person_threshold=0.30, search=search, clock=lambda: T0)


def test_one_poor_face_among_three_is_named_by_the_template():
    # given alex's track whose second face is poor (0.40 to his gallery face, under the 0.45 threshold)
    poor = mix(ALEX, np.eye(8, dtype=np.float32)[5], 0.7)
    assert 0.3 < float(np.dot(poor, ALEX)) < 0.45
    faces = [ALEX, poor, ALEX]
    # when: the vote has two agreeing faces of the three it needs, but the template is close to alex
    events = run(manager(), faces)
    # then alex is named at the third face, by the template
    assert (2, "identified", "alex") in events
    # and without the template the vote leaves the track unnamed (its budget of 3 faces spent)
    assert all(label is None for _, _, label in run(manager(template=False), faces))


def test_a_stranger_far_from_everyone_is_never_named_by_the_template():
    # given a never-enrolled person: far from every gallery face
    stranger = np.eye(8, dtype=np.float32)[6]
    # when / then
    assert all(label is None for _, _, label in run(manager(), [stranger] * 10))


def test_a_face_between_two_people_is_not_named_by_the_template():
    # given faces each just under the threshold for both alex and bob, with noise of their own: the
    # noise averages out, so the template comes close to both names at once (a thin margin)
    noise = np.eye(8, dtype=np.float32)
    faces = []
    for k in range(6):
        a, b = (0.44, 0.43) if k % 2 == 0 else (0.43, 0.44)
        faces.append((a * ALEX + b * BOB + np.sqrt(1 - a * a - b * b) * noise[5 + k % 3]).astype(np.float32))
    template = np.sum(faces, axis=0) / np.linalg.norm(np.sum(faces, axis=0))
    assert min(float(np.dot(template, ALEX)), float(np.dot(template, BOB))) > 0.45
    # when / then neither name is given
    assert all(label is None for _, _, label in run(manager(), faces))

"""The shared recognition step (analyze -> search -> decide), with hand-written fakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from streamd.recognize import FaceRecognition, recognize, resolve_threshold
from streamd.types import Decision, Face, Match


@dataclass(frozen=True)
class FakeResult:
    face: Face
    vector: np.ndarray | None
    rejected: str | None = None


class FakeEngine:
    """Returns the analysed faces it was given; remembers the images it saw."""

    default_threshold = 0.6

    def __init__(self, results: list[FakeResult]) -> None:
        self.results = results
        self.images: list[np.ndarray] = []

    def analyze(self, image: np.ndarray, *, largest_only: bool = False) -> list[FakeResult]:
        self.images.append(image)
        return self.results


class FakeLibrary:
    """Answers each query vector with the hits stored under the vector's first component."""

    def __init__(self, hits_by_key: dict[float, list[Match]]) -> None:
        self.hits_by_key = hits_by_key
        self.queries: list[tuple[np.ndarray, int]] = []

    def search(self, vectors: np.ndarray, topk: int) -> list[list[Match]]:
        self.queries.append((vectors, topk))
        return [self.hits_by_key[float(v[0])][:topk] for v in vectors]


def face(x: float) -> Face:
    return Face(box=(x, 10.0, x + 50.0, 60.0), score=0.9)


def vec(key: float) -> np.ndarray:
    return np.array([key, 0.0, 0.0], dtype=np.float32)


IMAGE = np.zeros((80, 200, 3), np.uint8)


def test_each_face_gets_its_own_decision_in_detector_order() -> None:
    # given
    engine = FakeEngine([FakeResult(face(0), vec(1.0)), FakeResult(face(100), vec(2.0))])
    library = FakeLibrary({
        1.0: [Match(0, "ann", 0.9), Match(1, "bob", 0.3)],
        2.0: [Match(1, "bob", 0.4), Match(0, "ann", 0.2)],
    })
    # when
    out = recognize(IMAGE, engine, library, threshold=0.5, margin=0.05, topk=2)
    # then
    assert [r.face.box[0] for r in out] == [0.0, 100.0]
    assert [(r.label, r.reason) for r in out] == [("ann", "known"), (None, "below_threshold")]
    assert [m.label for m in out[0].matches] == ["ann", "bob"]
    assert len(library.queries) == 1 and library.queries[0][0].shape == (2, 3) and library.queries[0][1] == 2


def test_a_face_the_quality_gate_rejected_is_not_searched_and_stays_unknown() -> None:
    # given
    engine = FakeEngine([FakeResult(face(0), None, "too_small"), FakeResult(face(100), vec(1.0))])
    library = FakeLibrary({1.0: [Match(0, "ann", 0.9)]})
    # when
    out = recognize(IMAGE, engine, library, threshold=0.5, margin=0.05, topk=5)
    # then
    assert (out[0].label, out[0].decision, out[0].reason, out[0].matches) == (None, None, "rejected:too_small", ())
    assert out[1].label == "ann"
    assert library.queries[0][0].shape == (1, 3)


def test_no_face_means_no_search() -> None:
    # given
    library = FakeLibrary({})
    # when
    out = recognize(IMAGE, FakeEngine([]), library, threshold=0.5, margin=0.05, topk=5)
    # then
    assert out == [] and library.queries == []


@pytest.mark.parametrize(("configured", "expected"), [(None, 0.6), (0.75, 0.75), (0.0, 0.0)])
def test_threshold_is_the_configured_one_or_the_engine_default(configured: float | None, expected: float) -> None:
    # when / then
    assert resolve_threshold(configured, FakeEngine([])) == expected


def test_face_recognition_needs_a_decision_or_a_rejection() -> None:
    # given
    decision = Decision(label="ann", score=0.9, margin=0.5, reason="known")
    # when / then
    with pytest.raises(ValueError, match="either a decision or a rejection reason"):
        FaceRecognition(face=face(0), decision=decision, rejected="blurry")
    with pytest.raises(ValueError, match="either a decision or a rejection reason"):
        FaceRecognition(face=face(0), decision=None)

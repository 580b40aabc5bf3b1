"""The open-set decision rule: threshold, margin to the best *different* label, empty index."""

from __future__ import annotations

import pytest

from streamd.index.decision import decide
from streamd.types import Match


def hits(*pairs: tuple[str, float]) -> list[Match]:
    return [Match(id=i, label=label, score=score) for i, (label, score) in enumerate(pairs)]


CASES = [
    # (name, matches, threshold, margin, label, reason, expected margin)
    ("clear winner", hits(("ann", 0.80), ("bob", 0.40)), 0.5, 0.05, "ann", "known", 0.40),
    ("same label fills top-k", hits(("ann", 0.80), ("ann", 0.70), ("bob", 0.60)), 0.5, 0.05, "ann", "known", 0.20),
    ("only one label: margin is the full score", hits(("ann", 0.70), ("ann", 0.65)), 0.5, 0.05, "ann", "known", 0.70),
    ("below threshold", hits(("ann", 0.30), ("bob", 0.10)), 0.5, 0.05, None, "below_threshold", 0.20),
    ("score equal to threshold passes", hits(("ann", 0.50), ("bob", 0.10)), 0.5, 0.05, "ann", "known", 0.40),
    ("look-alikes: thin margin", hits(("ann", 0.62), ("bob", 0.60)), 0.5, 0.05, None, "thin_margin", 0.02),
    ("tie between two labels", hits(("ann", 0.60), ("bob", 0.60)), 0.5, 0.0, "ann", "known", 0.0),
    ("tie with a required margin", hits(("ann", 0.60), ("bob", 0.60)), 0.5, 0.01, None, "thin_margin", 0.0),
    ("unsorted input", hits(("bob", 0.40), ("ann", 0.90)), 0.5, 0.05, "ann", "known", 0.50),
    ("empty index", [], 0.5, 0.05, None, "empty_index", 0.0),
]


@pytest.mark.parametrize(
    ("matches", "threshold", "margin", "label", "reason", "gap"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(matches, threshold, margin, label, reason, gap) -> None:
    # when
    decision = decide(matches, threshold, margin)
    # then
    assert (decision.label, decision.reason) == (label, reason)
    assert decision.margin == pytest.approx(gap)
    assert decision.score == pytest.approx(max((m.score for m in matches), default=0.0))
    assert [m.score for m in decision.matches] == sorted((m.score for m in matches), reverse=True)

"""The per-track identity vote: tables of observations -> decision, revisions and hysteresis."""

from __future__ import annotations

import pytest

from streamd.tracking.config import TrackingSettings
from streamd.tracking.identity import (
    DecisionRules,
    Observation,
    TrackDecision,
    best_label,
    decide,
    face_weight,
    tally,
)
from streamd.types import Match

RULES = DecisionRules(min_score=0.45, min_votes=3, min_margin=0.3, revise_margin=0.5, full_weight_face_px=100)


def obs(label: str | None, score: float = 0.7, size: float = 120, quality: float = 1.0) -> Observation:
    """One observation whose best match is ``label`` at ``score`` (None: an empty index answer)."""
    matches = () if label is None else (Match(1, label, score), Match(2, "zz_other", min(score, 0.2)))
    return Observation(matches, size, quality)


def low(score: float = 0.3) -> Observation:
    """An observation whose best match is under the vote threshold: a vote for unknown."""
    return obs("someone", score)


def run(observations: list[Observation], rules: DecisionRules = RULES) -> list[TrackDecision]:
    """The decision after each observation, as the manager computes them."""
    decisions: list[TrackDecision] = []
    t, previous = tally([], rules), None
    for o in observations:
        t = t.add(o, rules)
        previous = decide(t, previous, rules)
        decisions.append(previous)
    return decisions


@pytest.mark.parametrize(
    ("observations", "outcome", "label", "reason"),
    [
        ([], "unknown", None, "no_evidence"),
        ([obs("alex")] * 2, "unknown", None, "thin_evidence"),
        ([obs("alex")] * 3, "known", "alex", "agreed"),
        ([obs(None)] * 5, "unknown", None, "mostly_unknown"),
        ([low()] * 5, "unknown", None, "mostly_unknown"),
        ([obs("alex")] * 3 + [obs("bob")] * 3, "tie", None, "tie"),
        # 3 vs 2 equal votes: shares 0.6 / 0.4, margin 0.2 < 0.3
        ([obs("alex")] * 3 + [obs("bob")] * 2, "tie", None, "tie"),
        # 4 vs 2: shares 0.67 / 0.33, margin 0.33
        ([obs("alex")] * 4 + [obs("bob")] * 2, "known", "alex", "agreed"),
        # a never-enrolled person: rare chance matches to one name are outvoted by unknown
        ([low()] * 17 + [obs("bob", 0.47)] * 3, "unknown", None, "mostly_unknown"),
        ([obs("alex")] * 3 + [low()] * 2, "known", "alex", "agreed"),
        ([obs("alex")] * 3 + [low()] * 4, "unknown", None, "mostly_unknown"),
        # three large sharp faces outweigh three small blurred ones
        ([obs("alex", size=120)] * 3 + [obs("bob", size=30, quality=0.3)] * 3, "known", "alex", "agreed"),
        # the same counts with the quality reversed
        ([obs("alex", size=30, quality=0.3)] * 3 + [obs("bob", size=120)] * 3, "known", "bob", "agreed"),
        # higher similarity weighs more: 0.9 x 3 against 0.46 x 3 = shares 0.66 / 0.34
        ([obs("alex", 0.9)] * 3 + [obs("bob", 0.46)] * 3, "known", "alex", "agreed"),
    ],
)
def test_decision_table(observations, outcome, label, reason):
    # given / when
    d = decide(tally(observations, RULES), None, RULES)
    # then
    assert (d.outcome, d.label, d.reason) == (outcome, label, reason)
    assert d.observations == len(observations)


def test_a_known_decision_reports_score_margin_and_evidence():
    # given three agreeing observations of alex and one vote for unknown
    observations = [obs("alex", 0.6), obs("alex", 0.7), obs("alex", 0.8), low()]
    # when
    d = decide(tally(observations, RULES), None, RULES)
    # then score is the weighted mean similarity, margin alex's share minus unknown's, evidence 3
    assert d.label == "alex" and d.evidence == 3
    assert d.score == pytest.approx(0.7)
    alex, unknown = 0.6 + 0.7 + 0.8, 0.45
    assert d.margin == pytest.approx((alex - unknown) / (alex + unknown))


@pytest.mark.parametrize(
    ("observations", "margin", "evidence", "runner_up"),
    [
        ([obs("alex")] * 2, -1.0, 0, "alex"),  # a name leads, on too few observations
        ([low()] * 5, 1.0, 5, None),
        ([obs("alex")] * 3 + [low()] * 4, (4 * 0.45 - 3 * 0.7) / (4 * 0.45 + 3 * 0.7), 4, "alex"),
        ([obs("alex")] * 3 + [obs("bob")] * 3, 0.0, 3, "bob"),
    ],
)
def test_margin_and_evidence_of_unknown_and_tie(observations, margin, evidence, runner_up):
    # given / when
    d = decide(tally(observations, RULES), None, RULES)
    # then the margin is the outcome's share minus the best other's, evidence the agreeing count
    assert d.margin == pytest.approx(margin)
    assert (d.evidence, d.runner_up) == (evidence, runner_up)


def test_the_runner_up_is_named():
    # given / when
    d = decide(tally([obs("alex")] * 4 + [obs("bob")] * 2, RULES), None, RULES)
    # then
    assert d.runner_up == "bob"


def test_unknown_then_name_when_evidence_accumulates():
    # given / when a face seen with alex's matches sample after sample
    labels = [d.label for d in run([obs("alex")] * 5)]
    # then unknown until min_votes agree, then alex
    assert labels == [None, None, "alex", "alex", "alex"]


def test_a_wrong_early_name_is_corrected_by_clearly_stronger_evidence():
    # given a track named bob on three chance matches, then seen as alex
    decisions = run([obs("bob")] * 3 + [obs("alex")] * 12)
    labels = [d.label for d in decisions]
    # when / then bob holds while alex's lead is under revise_margin, then alex for good
    flip = labels.index("alex")
    assert labels[:3] == [None, None, "bob"]
    assert set(labels[2:flip]) == {"bob"} and set(labels[flip:]) == {"alex"}
    # alex needs a vote share 0.5 above bob's: 9 votes against 3 (0.75 - 0.25)
    assert flip == 3 + 9 - 1
    assert decisions[flip - 1].reason == "kept"


@pytest.mark.parametrize("seed_pattern", ["ab", "aab", "abb", "abab" * 3 + "b"])
def test_alternating_noisy_observations_never_flap(seed_pattern: str):
    # given observations alternating between two names in a repeating pattern
    names = {"a": "alex", "b": "bob"}
    pattern = [obs(names[c]) for c in seed_pattern]
    decisions = run(pattern * 20)
    labels = [d.label for d in decisions]
    # when / then the label changes at most once (from unknown to a name), never back and forth
    changes = [(x, y) for x, y in zip(labels, labels[1:]) if x != y]
    assert len(changes) <= 1
    assert all(x is None for x, _ in changes)


def test_a_few_bad_frames_do_not_withdraw_a_name():
    # given a track named alex on five observations
    decisions = run([obs("alex")] * 5 + [low()] * 6)
    # when six bad frames follow (unknown now too close for a fresh name: shares 0.56 / 0.44)
    # then the name stands, reported as kept, with alex's share minus unknown's as margin
    assert decisions[-1].label == "alex" and decisions[-1].reason == "kept"
    alex, unknown = 5 * 0.7, 6 * 0.45
    assert decisions[-1].margin == pytest.approx((alex - unknown) / (alex + unknown))
    assert decisions[-1].runner_up is None  # unknown


def test_a_name_is_withdrawn_to_unknown_only_on_much_stronger_evidence():
    # given a track named alex on three chance matches, then many faces nobody in the gallery matches
    labels = [d.label for d in run([obs("alex", 0.5)] * 3 + [low()] * 20)]
    # when / then alex holds for a while, then the track is unknown
    withdrawn = labels.index(None, 3)
    assert set(labels[2:withdrawn]) == {"alex"} and set(labels[withdrawn:]) == {None}
    assert withdrawn > 3 + 3


def test_a_tie_under_an_existing_name_keeps_the_name():
    # given alex named, then bob catching up to a tie
    decisions = run([obs("alex")] * 4 + [obs("bob")] * 4)
    # when / then no revision: a tie is not clearly stronger evidence
    assert decisions[-1].label == "alex" and decisions[-1].reason == "kept"


@pytest.mark.parametrize(
    ("size", "quality", "weight"),
    [
        (100, 1.0, 1.0),
        (200, 1.0, 1.0),
        (50, 1.0, 0.5),
        (50, 0.5, 0.25),
        (100, 1.7, 1.0),
        (100, -0.2, 0.0),
        (100, None, 0.0),
        (0, 1.0, 0.0),
    ],
)
def test_face_weight_table(size, quality, weight):
    # given / when / then
    assert face_weight(size, quality, 100.0) == pytest.approx(weight)


def test_best_label_takes_the_best_vector_of_each_label():
    # given top-k matches with two vectors of alex and one of bob
    matches = [Match(1, "alex", 0.5), Match(7, "bob", 0.6), Match(2, "alex", 0.65)]
    # when / then
    assert best_label(matches) == ("alex", 0.65)
    assert best_label([]) == (None, 0.0)


def test_the_tally_stays_small_however_many_observations():
    # given a long track
    t = tally([obs("alex"), obs("bob"), low()] * 1000, RULES)
    # when / then it holds one entry per label, counts all
    assert sorted(t.labels) == ["alex", "bob"] and t.observations == 3000


def test_rules_come_from_settings_and_the_recognition_threshold():
    # given default settings and a dlib-like threshold, then an explicit vote threshold
    default = DecisionRules.from_settings(TrackingSettings(), rec_threshold=0.82)
    explicit = DecisionRules.from_settings(TrackingSettings(min_score=0.5, min_votes=2), rec_threshold=0.82)
    # when / then
    assert (default.min_score, default.min_votes) == (0.82, 3)
    assert (explicit.min_score, explicit.min_votes) == (0.5, 2)

"""The per-track identity decision: a weighted vote over the track's observations.

Each observation (one embedded face of the track: its gallery matches, face size, quality)
casts one vote:

- for its best label, when that label's similarity reaches ``min_score``, weighing
  similarity x size weight x quality weight;
- for *unknown* otherwise, weighing ``min_score`` x size weight x quality weight (as much as a
  borderline match), so that a never-enrolled person's rare chance matches are outvoted.

:func:`decide` turns the tally into a :class:`TrackDecision`:

- ``known``: the best label has at least ``min_votes`` agreeing observations and its share of the
  total vote beats both the runner-up label's and unknown's shares by ``min_margin``;
- ``tie``: it has the votes, but the runner-up label is within ``min_margin``;
- ``unknown``: too few agreeing observations, or unknown's share is too close or larger.

Hysteresis: once a track is named, the name stands unless a challenger (another label, or
unknown) has ``min_votes`` observations and a share exceeding the name's by ``revise_margin``.
The tally is cumulative over the whole track, so a few bad frames cannot withdraw a name that
many good ones gave, and a decision cannot flap back and forth on alternating noise.

A track the vote leaves unnamed after ``min_votes`` faces may still be named by its *template*
(:func:`with_template`): the quality-weighted mean of its face vectors, searched as one face and
named by the single-face rule. One poor face among three keeps the vote at ``thin_evidence``,
while the mean of the three still sits close to the person's gallery faces.

Everything here is pure: frozen values in, frozen values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from streamd.tracking.config import TrackingSettings
from streamd.types import Decision, Match

Outcome = Literal["known", "unknown", "tie"]

#: Why a decision came out as it did.
REASONS = ("agreed", "no_evidence", "thin_evidence", "mostly_unknown", "tie", "kept", "template")


@dataclass(frozen=True)
class DecisionRules:
    """The knobs of the vote, resolved for one recogniser (see :class:`TrackingSettings`)."""

    min_score: float
    min_votes: int = 3
    min_margin: float = 0.3
    revise_margin: float = 0.5
    full_weight_face_px: float = 100.0

    @classmethod
    def from_settings(cls, settings: TrackingSettings, rec_threshold: float) -> DecisionRules:
        return cls(
            min_score=settings.vote_threshold(rec_threshold),
            min_votes=settings.min_votes,
            min_margin=settings.min_margin,
            revise_margin=settings.revise_margin,
            full_weight_face_px=settings.full_weight_face_px,
        )


@dataclass(frozen=True)
class Observation:
    """One embedded face of a track: its gallery matches (best first), size in pixels, quality in [0, 1]."""

    matches: tuple[Match, ...]
    size: float
    quality: float
    ts: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches", tuple(self.matches))


def face_weight(size: float, quality: float | None, full_weight_face_px: float) -> float:
    """How much a face counts, in [0, 1]: size (saturating at ``full_weight_face_px``) x quality.

    A face without a quality figure (it failed the quality gate) weighs 0.
    """
    size_w = min(1.0, max(0.0, size) / full_weight_face_px)
    quality_w = 0.0 if quality is None else min(1.0, max(0.0, quality))
    return size_w * quality_w


@dataclass(frozen=True)
class Votes:
    """The votes one candidate (a label, or unknown) has received."""

    count: int = 0
    #: Sum of the vote weights (similarity x size x quality for labels).
    weight: float = 0.0
    #: Sum of size x quality weights, and of those times similarity: their ratio is the
    #: weighted mean similarity of the votes.
    face_weight: float = 0.0
    weighted_similarity: float = 0.0
    #: The highest similarity among the votes (for unknown: the closest any face came to a name).
    best: float = 0.0

    def plus(self, vote: float, fw: float, similarity: float) -> Votes:
        return Votes(
            self.count + 1,
            self.weight + vote,
            self.face_weight + fw,
            self.weighted_similarity + fw * similarity,
            similarity if self.count == 0 else max(self.best, similarity),
        )

    @property
    def score(self) -> float:
        """Weighted mean similarity of the votes (0 when none)."""
        if self.face_weight > 0:
            return self.weighted_similarity / self.face_weight
        return 0.0


@dataclass(frozen=True)
class Tally:
    """All votes of one track so far. Cumulative and bounded by the number of labels seen."""

    labels: Mapping[str, Votes] = field(default_factory=lambda: MappingProxyType({}))
    unknown: Votes = field(default_factory=Votes)

    @property
    def observations(self) -> int:
        return self.unknown.count + sum(v.count for v in self.labels.values())

    @property
    def total_weight(self) -> float:
        return self.unknown.weight + sum(v.weight for v in self.labels.values())

    def add(self, obs: Observation, rules: DecisionRules) -> Tally:
        """The tally with one more observation's vote."""
        fw = face_weight(obs.size, obs.quality, rules.full_weight_face_px)
        # A tiny floor so that every observation counts a little even when the caller's quality
        # figure is 0: the count still matters for min_votes.
        fw = max(fw, 1e-6)
        label, similarity = best_label(obs.matches)
        if label is not None and similarity >= rules.min_score:
            labels = dict(self.labels)
            labels[label] = labels.get(label, Votes()).plus(similarity * fw, fw, similarity)
            return Tally(MappingProxyType(labels), self.unknown)
        top = similarity if label is not None else 0.0
        return Tally(self.labels, self.unknown.plus(max(rules.min_score, 0.0) * fw, fw, top))

    def without(self, labels: Iterable[str]) -> Tally:
        """The tally with every vote for ``labels`` dropped (they left the gallery): unknown's votes stay."""
        gone = set(labels)
        if not gone.intersection(self.labels):
            return self
        kept = {label: votes for label, votes in self.labels.items() if label not in gone}
        return Tally(MappingProxyType(kept), self.unknown)


def clearly_unknown(t: Tally, rules: DecisionRules, below: float) -> bool:
    """True when the track looks like someone not enrolled, not like a hard face of someone who is.

    At least ``min_votes`` faces were embedded, none reached ``min_score`` for any name, and the
    closest any of them came to a gallery face is under ``below``.
    """
    return not t.labels and t.unknown.count >= rules.min_votes and t.unknown.best < below


def best_label(matches: Sequence[Match]) -> tuple[str | None, float]:
    """The label with the highest similarity among the matches, and that similarity."""
    best: Match | None = None
    for m in matches:
        if best is None or m.score > best.score:
            best = m
    return (None, 0.0) if best is None else (best.label, float(best.score))


def tally(observations: Iterable[Observation], rules: DecisionRules) -> Tally:
    """The tally of a sequence of observations."""
    t = Tally()
    for obs in observations:
        t = t.add(obs, rules)
    return t


@dataclass(frozen=True)
class TrackDecision:
    """Who a track is: ``label`` is None unless ``outcome`` is ``known``.

    ``score`` is the weighted mean similarity of the label's votes (for unknown and tie, of the
    closest label's, or the mean best similarity when no observation reached ``min_score``).
    ``margin`` is the vote share of the outcome minus that of the best other candidate: for
    ``known`` the label's minus the runner-up label's or unknown's, for ``tie`` the best label's
    minus the runner-up's, for ``unknown`` unknown's minus the best label's (negative when a name
    leads on too few observations). ``evidence`` is the number of observations that agree with the
    outcome (for a tie, with the best label); ``observations`` all of the track's. ``runner_up``
    names the closest other label (for unknown, the closest label).
    """

    outcome: Outcome
    label: str | None
    score: float
    margin: float
    evidence: int
    observations: int
    reason: str
    runner_up: str | None = None

    @property
    def known(self) -> bool:
        return self.outcome == "known"


def decide(t: Tally, previous: TrackDecision | None, rules: DecisionRules) -> TrackDecision:
    """The track's decision from its tally, keeping ``previous`` when a name is not clearly beaten."""
    candidate = _candidate(t, rules)
    if previous is None or not previous.known or candidate.label == previous.label:
        return candidate
    return _revised_or_kept(t, previous, candidate, rules)


def with_template(vote: TrackDecision, template: Decision | None, faces: int, rules: DecisionRules) -> TrackDecision:
    """The vote's decision or, when it names nobody, the template's name ("vote, else template").

    ``template`` is the single-face decision (:func:`streamd.index.decision.decide`) of the track's
    template vector, ``faces`` the number of faces averaged into it. The template only speaks for
    a track with at least ``min_votes`` faces whose vote is ``unknown``; a tie between two names
    stays a tie (a look-alike is the case where an average is least to be trusted).
    """
    if vote.outcome != "unknown" or template is None or template.label is None or faces < rules.min_votes:
        return vote
    return TrackDecision(
        "known", template.label, template.score, template.margin, faces, vote.observations, "template",
        vote.runner_up if vote.runner_up != template.label else None,
    )


def _ranked(t: Tally) -> list[tuple[str, Votes]]:
    # Heaviest first; ties broken by count, then by name so that the order is deterministic.
    return sorted(t.labels.items(), key=lambda kv: (-kv[1].weight, -kv[1].count, kv[0]))


def _candidate(t: Tally, rules: DecisionRules) -> TrackDecision:
    n = t.observations
    total = t.total_weight
    if n == 0 or total <= 0:
        return TrackDecision("unknown", None, 0.0, 0.0, 0, n, "no_evidence")
    ranked = _ranked(t)
    unknown_share = t.unknown.weight / total
    if not ranked:
        return TrackDecision("unknown", None, t.unknown.score, 1.0, t.unknown.count, n, "mostly_unknown")
    best, votes = ranked[0]
    share = votes.weight / total
    runner_up, second_share = (ranked[1][0], ranked[1][1].weight / total) if len(ranked) > 1 else (None, 0.0)

    def unknown(reason: str) -> TrackDecision:
        return TrackDecision("unknown", None, votes.score, unknown_share - share, t.unknown.count, n, reason, best)

    if votes.count < rules.min_votes:
        return unknown("thin_evidence")
    if share - unknown_share < rules.min_margin:
        return unknown("mostly_unknown")
    if share - second_share < rules.min_margin:
        return TrackDecision("tie", None, votes.score, share - second_share, votes.count, n, "tie", runner_up)
    margin = share - max(second_share, unknown_share)
    return TrackDecision("known", best, votes.score, margin, votes.count, n, "agreed", runner_up)


def _revised_or_kept(
    t: Tally, previous: TrackDecision, candidate: TrackDecision, rules: DecisionRules
) -> TrackDecision:
    total = t.total_weight
    name = previous.label
    assert name is not None
    own = t.labels.get(name, Votes())
    own_share = own.weight / total
    challengers = [(label, v) for label, v in t.labels.items() if label != name] + [(None, t.unknown)]
    challenger, votes = max(challengers, key=lambda cv: (cv[1].weight, cv[1].count))
    lead = votes.weight / total - own_share
    if votes.count >= rules.min_votes and lead >= rules.revise_margin:
        return candidate
    return replace(
        previous,
        score=own.score,
        margin=-lead,
        evidence=own.count,
        observations=t.observations,
        reason="kept",
        runner_up=challenger,
    )

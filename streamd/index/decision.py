"""The open-set decision for one face: a name from the gallery hits, or unknown and why.

Kept apart from the search so that the rule is a small pure function: the tracker and the infer
command call it with the same top-k hits the index returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamd.types import Decision, Match


def decide(matches: Sequence[Match], threshold: float, margin: float) -> Decision:
    """Name the best label when it is similar enough and clearly ahead of every other label.

    * ``empty_index``: no hits at all (the library is empty).
    * ``below_threshold``: the best score is under ``threshold`` (a score equal to it passes, as
      in PaddleX, which rejects only ``score < rec_threshold``).
    * ``thin_margin``: the best label beats the best score of a *different* label by less than
      ``margin``. When every hit has the best label, the margin is the best score itself (as if
      the nearest other person had similarity 0); keep ``rec_topk`` above the number of images
      per person so that another person shows up among the hits.
    * ``known``: otherwise.
    """
    hits = tuple(sorted(matches, key=lambda m: m.score, reverse=True))
    if not hits:
        return Decision(label=None, score=0.0, margin=0.0, reason="empty_index", matches=())
    best = hits[0]
    runner_up = next((m.score for m in hits if m.label != best.label), None)
    gap = best.score - runner_up if runner_up is not None else best.score
    if best.score < threshold:
        reason = "below_threshold"
    elif gap < margin:
        reason = "thin_margin"
    else:
        reason = "known"
    return Decision(
        label=best.label if reason == "known" else None,
        score=best.score,
        margin=gap,
        reason=reason,
        matches=hits,
    )

"""`streamd eval tracks`: track-level naming on simulated tracks of real photos, open-set, on the report half.

The protocol is `eval levers`' (:mod:`streamd.eval.levers`), with tracks instead of single probes.
Each half of the split (:mod:`streamd.eval.split`) is split on its own by
:func:`streamd.eval.ident.split_people` (``unknown_share`` of its people never enrolled, chosen by
``seed``; everyone else enrolled with their first ``enrol`` images). A *track* of ``K`` faces is:

* for an enrolled person with at least ``enrol + K`` images: the ``K`` images after the enrolled ones;
* for a never-enrolled person (a *stranger*) with at least ``K`` images: their first ``K`` images.

Each image is one embedded face of the track (its largest face, YuNet-aligned, never flipped),
all of one size and quality 1, so every face weighs the same in the vote. The images are real,
varied photos (different days, lighting, poses), harder than the frames of one walk past a camera.

Variants (each with its own threshold, the lowest at which at most ``max_unknown_named`` of the
*tuning* half's stranger tracks get a name; figures are the *report* half's at that threshold):

* ``single image``: the track's first face alone, :func:`streamd.index.decision.decide` (threshold + margin).
* ``vote``: the daemon's own per-track vote, exactly as :mod:`streamd.tracking.manager` runs it:
  each face's top-k index hits become an :class:`Observation`, added to a :class:`Tally`, and
  :func:`streamd.tracking.identity.decide` (with the previous decision: hysteresis) after each face;
  the vote threshold is the naming threshold; ``min_votes``, ``min_margin``, ``revise_margin`` are
  the tracking defaults. The track's name is the decision after its last face.
* ``template``: the normalised mean of the track's face vectors, searched once, named by the
  single-face rule (threshold + margin).
* ``vote, else template``: the vote at its own tuned threshold; a track the vote leaves unnamed is
  named by the template, whose threshold is chosen so that the two together name at most
  ``max_unknown_named`` of the strangers.
* ``vote = template``: one threshold for both; named only when both name the same person.
* ``2nd opinion``: the first embedder's vote at its own tuned threshold; for every track it leaves
  unnamed (after its whole budget of ``K`` faces), the second embedder embeds the same faces and a
  vote over the fused scores decides (per face and label: the mean of the two models' best
  cosine to that label's gallery vectors, the top-k labels as the face's hits). The fused vote's
  threshold is chosen so that both stages together name at most ``max_unknown_named`` of the
  strangers. ``2nd opinion, not clearly unknown`` skips the tracks the daemon already calls
  clearly unknown (:func:`streamd.tracking.identity.clearly_unknown`), which costs less.
* ``fused vote``: both models on every face, the vote over the fused scores (what the second
  opinion saves against).

Features come from :func:`streamd.eval.levers.compute_features` and its ``.npz`` caches, so a run
after `eval levers` only embeds the images that command never needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from streamd.errors import StreamdError
from streamd.eval.features import pct, write_json
from streamd.eval.ident import Split, split_people
from streamd.eval.levers import (
    EMBEDDERS,
    Features,
    Figures,
    _parse_seeds,
    compute_features,
    open_study,
    paired,
    study_model_options,
    time_costs,
)
from streamd.faces.vectors import l2_normalise
from streamd.index.decision import decide as decide_face
from streamd.tracking.config import TrackingSettings
from streamd.tracking.identity import DecisionRules, Observation, Tally, TrackDecision, clearly_unknown, decide
from streamd.types import Match

#: First and second embedder of each second-opinion pair: the cheap one runs on every face.
DEFAULT_PAIRS = "mobileface+dlib,foamliu+dlib,foamliu+mobileface"

#: Grid points added between the strangers' scores when thresholds are searched: the vote's
#: unknown weight grows with the threshold, so naming can change between two face scores.
GRID_POINTS = 200

Named = list[str | None]


# --------------------------------------------------------------------------- tracks


@dataclass(frozen=True)
class TrackSet:
    """One half's simulated tracks for one choice of strangers and one track length."""

    truth: list[str | None]  # the track's person when enrolled, None for a stranger
    people: list[str]  # the person whose images make the track
    rows: list[list[int]]  # feature rows of the track's faces, in order (images without a face dropped)
    gallery_labels: list[str]  # per gallery vector
    gallery_rows: np.ndarray  # feature row of each gallery vector

    @property
    def strangers(self) -> list[int]:
        """Indices of the stranger tracks."""
        return [i for i, t in enumerate(self.truth) if t is None]

    @property
    def known(self) -> list[int]:
        """Indices of the enrolled people's tracks."""
        return [i for i, t in enumerate(self.truth) if t is not None]


def make_tracks(split: Split, k: int, feats: Features) -> TrackSet:
    """The tracks of ``split`` (made with ``probes=k``): only people with ``k`` probe images get one."""
    gallery_labels: list[str] = []
    gallery_rows: list[int] = []
    for name in sorted(split.gallery):
        for p in split.gallery[name]:
            r = feats.index[Path(p).resolve()]
            if feats.found[r]:
                gallery_labels.append(name)
                gallery_rows.append(r)
    truth: list[str | None] = []
    people: list[str] = []
    rows: list[list[int]] = []
    for probes, enrolled in ((split.known_probes, True), (split.unknown_probes, False)):
        by_person: dict[str, list[Path]] = {}
        for name, p in probes:
            by_person.setdefault(name, []).append(p)
        for name in sorted(by_person):
            images = by_person[name]
            if len(images) < k:
                continue
            track_rows = [feats.index[Path(p).resolve()] for p in images[:k]]
            truth.append(name if enrolled else None)
            people.append(name)
            rows.append([r for r in track_rows if feats.found[r]])
    return TrackSet(truth, people, rows, gallery_labels, np.array(gallery_rows, dtype=np.int64))


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class TrackScores:
    """One embedder's (or one fusion's) hits for every face and template of a :class:`TrackSet`."""

    labels: list[str]  # the gallery's people, sorted: the columns of ``per_label``
    per_label: list[np.ndarray]  # per track: (faces, labels) best cosine of each face to each person
    face_hits: list[list[tuple[Match, ...]]]  # per track, per face: its top-k hits, best first
    template_hits: list[tuple[Match, ...]]  # per track: the hits of its normalised mean vector
    first_hits: list[tuple[Match, ...]]  # per track: the hits of its first face alone

    def face_scores(self, tracks: Sequence[int]) -> np.ndarray:
        """The best hit score of every face of ``tracks`` (where the vote's threshold can matter)."""
        out = [h[0].score for i in tracks for h in self.face_hits[i] if h]
        return np.array(out, dtype=np.float64)

    def template_scores(self, tracks: Sequence[int]) -> np.ndarray:
        """The best template hit score of ``tracks``."""
        return np.array([self.template_hits[i][0].score for i in tracks if self.template_hits[i]], dtype=np.float64)


def _top_hits(sims: np.ndarray, labels: Sequence[str], topk: int) -> tuple[Match, ...]:
    """The ``topk`` best entries of one row of similarities as index hits, best first."""
    if sims.size == 0:
        return ()
    k = min(topk, sims.size)
    idx = np.argpartition(-sims, k - 1)[:k]
    idx = idx[np.argsort(-sims[idx], kind="stable")]
    return tuple(Match(id=int(j), label=labels[j], score=float(sims[j])) for j in idx)


def _per_label(sims: np.ndarray, gallery_labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(rows, people): the best of each person's gallery vectors per row of ``sims``."""
    code = {n: i for i, n in enumerate(names)}
    lab = np.array([code[g] for g in gallery_labels])
    order = np.argsort(lab, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(lab[order]) != 0])
    return np.maximum.reduceat(sims[:, order], starts, axis=1)


def score_tracks(tracks: TrackSet, vectors: np.ndarray, topk: int) -> TrackScores:
    """Search every face, every track's template and its first face in the gallery of ``tracks``.

    ``vectors``: (images, dim) unit vectors of one embedder, indexed by feature row. Hits are the
    top-k gallery *vectors* (what the daemon's index returns), so two hits may share a label.
    """
    gal = vectors[tracks.gallery_rows]
    labels = sorted(set(tracks.gallery_labels))
    per_label, face_hits, template_hits, first_hits = [], [], [], []
    for rows in tracks.rows:
        if not rows:
            per_label.append(np.zeros((0, len(labels)), np.float32))
            face_hits.append([])
            template_hits.append(())
            first_hits.append(())
            continue
        faces = vectors[rows]
        sims = faces @ gal.T
        per_label.append(_per_label(sims, tracks.gallery_labels, labels))
        face_hits.append([_top_hits(s, tracks.gallery_labels, topk) for s in sims])
        template = l2_normalise(faces.mean(axis=0, keepdims=True))
        template_hits.append(_top_hits((template @ gal.T)[0], tracks.gallery_labels, topk))
        first_hits.append(face_hits[-1][0])
    return TrackScores(labels, per_label, face_hits, template_hits, first_hits)


def fuse_scores(a: TrackScores, b: TrackScores, topk: int) -> TrackScores:
    """Score-level fusion per face: the mean of the two models' best cosine per person, top-k people as hits.

    Only the faces are fused (the second opinion votes over them); templates and first faces keep ``a``'s.
    """
    if a.labels != b.labels:
        raise StreamdError("the two embedders saw different galleries; cannot fuse their scores")
    per_label = [(pa + pb) / 2.0 for pa, pb in zip(a.per_label, b.per_label)]
    face_hits = [[_top_hits(row, a.labels, topk) for row in p] for p in per_label]
    return TrackScores(a.labels, per_label, face_hits, a.template_hits, a.first_hits)


# --------------------------------------------------------------------------- decisions


def track_vote(face_hits: Sequence[tuple[Match, ...]], rules: DecisionRules) -> tuple[TrackDecision, Tally]:
    """The daemon's decision after the track's faces, added one by one as the tracking manager adds them."""
    tally = Tally()
    decision: TrackDecision | None = None
    for hits in face_hits:
        tally = tally.add(Observation(hits, rules.full_weight_face_px, 1.0), rules)
        decision = decide(tally, decision, rules)
    return (decision if decision is not None else decide(tally, None, rules)), tally


def vote_names(scores: TrackScores, tracks: Sequence[int], threshold: float, rules: DecisionRules) -> Named:
    """The vote's name of each of ``tracks`` (None: unnamed) at ``threshold`` (the vote threshold)."""
    if not math.isfinite(threshold):  # even the highest candidate named too many strangers
        return [None for _ in tracks]
    r = replace(rules, min_score=threshold)
    return [track_vote(scores.face_hits[i], r)[0].label for i in tracks]


def face_names(hits: Sequence[tuple[Match, ...]], tracks: Sequence[int], threshold: float, margin: float) -> Named:
    """The single-face rule (threshold + margin) on one set of hits per track."""
    return [decide_face(hits[i], threshold, margin).label for i in tracks]


def lowest_threshold(
    names_at: Callable[[float], Named], candidates: np.ndarray, allowed: int
) -> float:
    """The lowest candidate at and above which no more than ``allowed`` of the strangers get a name.

    ``names_at(t)`` names the strangers at threshold ``t``. Candidates are tried from the highest
    down and the search stops at the first that names too many, so a threshold never sits inside
    a dip where a lower threshold happens to name fewer strangers than a higher one.
    """
    cands = np.unique(candidates[np.isfinite(candidates)])[::-1]
    if len(cands) == 0:
        return math.inf
    chosen = math.inf
    for t in cands:
        if sum(n is not None for n in names_at(float(t))) > allowed:
            break
        chosen = float(t)
    return chosen


def candidates_from(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: just above each score (so it stops passing) and a grid across their range."""
    if scores.size == 0:
        return np.array([math.inf])
    above = np.nextafter(scores, np.inf)
    grid = np.linspace(float(scores.min()), float(np.nextafter(scores.max(), np.inf)), GRID_POINTS)
    return np.concatenate([above, grid])


def figures_of(truth: Sequence[str | None], named: Named, threshold: float) -> Figures:
    """Enrolled tracks named correctly and wrongly, stranger tracks named."""
    known = np.array([t is not None for t in truth])
    right = np.array([n is not None and n == t for n, t in zip(named, truth)])
    is_named = np.array([n is not None for n in named])
    return Figures(
        threshold=threshold,
        correct=int(right[known].sum()),
        wrong=int((is_named & known & ~right).sum()),
        known=int(known.sum()),
        unknown_named=int((is_named & ~known).sum()),
        unknown=int((~known).sum()),
        right=right[known],
    )


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class HalfScores:
    """One half's tracks and the scores of every embedder and fused pair on them."""

    tracks: TrackSet
    scores: dict[str, TrackScores]  # embedder name, or "a+b" for a fused pair


@dataclass(frozen=True)
class Result:
    """One variant on one seed: thresholds (chosen on the tuning half), tuning and report figures."""

    thresholds: dict[str, float]
    tune: Figures
    report: Figures
    second_known: int = 0  # report-half enrolled tracks the second model ran on
    second_strangers: int = 0  # report-half stranger tracks the second model ran on


def _threshold_text(thresholds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" if math.isfinite(v) else f"{k} inf" for k, v in thresholds.items())


def evaluate(
    tune: HalfScores, report: HalfScores, embedders: Sequence[str], pairs: Sequence[tuple[str, str]],
    rules: DecisionRules, margin: float, max_unknown_named: float, clearly_unknown_ratio: float,
) -> dict[tuple[str, str], Result]:
    """Every variant: threshold(s) chosen on ``tune``'s strangers, figures on ``report``.

    Keys are (family, variant): family is the embedder, or ``a+b`` for a second-opinion pair.
    """
    t_str = tune.tracks.strangers
    allowed = int(math.floor(max_unknown_named * len(t_str) + 1e-9))
    r_all = list(range(len(report.tracks.truth)))
    t_all = list(range(len(tune.tracks.truth)))
    out: dict[tuple[str, str], Result] = {}

    def run(key: tuple[str, str], namer: Callable[[HalfScores, Sequence[int], float], Named], cands: np.ndarray,
            fixed: dict[str, float], name: str) -> float:
        t = lowest_threshold(lambda x: namer(tune, t_str, x), cands, allowed)
        thresholds = {**fixed, name: t}
        out[key] = Result(
            thresholds,
            figures_of(tune.tracks.truth, namer(tune, t_all, t), t),
            figures_of(report.tracks.truth, namer(report, r_all, t), t),
        )
        return t

    vote_t: dict[str, float] = {}
    for e in embedders:
        st = tune.scores[e]
        face_c = candidates_from(st.face_scores(t_str))
        tpl_c = candidates_from(st.template_scores(t_str))
        first_c = candidates_from(np.array([st.first_hits[i][0].score for i in t_str if st.first_hits[i]]))

        run((e, "single image"), lambda h, idx, t, e=e: face_names(h.scores[e].first_hits, idx, t, margin),
            first_c, {}, "t")
        tv = run((e, "vote"), lambda h, idx, t, e=e: vote_names(h.scores[e], idx, t, rules), face_c, {}, "t")
        vote_t[e] = tv
        run((e, "template"), lambda h, idx, t, e=e: face_names(h.scores[e].template_hits, idx, t, margin),
            tpl_c, {}, "t")

        def vote_else_template(h: HalfScores, idx: Sequence[int], t: float, e: str = e, tv: float = tv) -> Named:
            first = vote_names(h.scores[e], idx, tv, rules)
            second = face_names(h.scores[e].template_hits, idx, t, margin)
            return [a if a is not None else b for a, b in zip(first, second)]

        run((e, "vote, else template"), vote_else_template, tpl_c, {"vote": tv}, "template")

        def agree(h: HalfScores, idx: Sequence[int], t: float, e: str = e) -> Named:
            a = vote_names(h.scores[e], idx, t, rules)
            b = face_names(h.scores[e].template_hits, idx, t, margin)
            return [x if x is not None and x == y else None for x, y in zip(a, b)]

        run((e, "vote = template"), agree, np.concatenate([face_c, tpl_c]), {}, "t")

    for a, b in pairs:
        fam = f"{a}+{b}"
        fused_c = candidates_from(tune.scores[fam].face_scores(t_str))
        run((fam, "fused vote"), lambda h, idx, t, fam=fam: vote_names(h.scores[fam], idx, t, rules), fused_c, {}, "t")
        ta = vote_t[a]
        for skip in (False, True):
            variant = "2nd opinion, not clearly unknown" if skip else "2nd opinion"

            def needs(h: HalfScores, idx: Sequence[int], a: str = a, ta: float = ta, skip: bool = skip) -> list[bool]:
                if not math.isfinite(ta):  # the first vote names nobody: every track needs the second
                    return [True for _ in idx]
                r = replace(rules, min_score=ta)
                below = clearly_unknown_ratio * ta
                out_: list[bool] = []
                for i in idx:
                    d, tally = track_vote(h.scores[a].face_hits[i], r)
                    out_.append(not d.known and not (skip and clearly_unknown(tally, r, below)))
                return out_

            def second_opinion(h: HalfScores, idx: Sequence[int], t: float, a: str = a, fam: str = fam,
                               ta: float = ta, needs: Callable[..., list[bool]] = needs) -> Named:
                first = vote_names(h.scores[a], idx, ta, rules)
                need = needs(h, idx)
                rest = [i for i, n in zip(idx, need) if n]
                fused = dict(zip(rest, vote_names(h.scores[fam], rest, t, rules)))
                return [f if f is not None or not n else fused[i] for i, f, n in zip(idx, first, need)]

            run((fam, variant), second_opinion, fused_c, {a: ta}, "fused")
            need = needs(report, r_all)
            truth = report.tracks.truth
            out[(fam, variant)] = replace(
                out[(fam, variant)],
                second_known=sum(n for n, t in zip(need, truth) if t is not None),
                second_strangers=sum(n for n, t in zip(need, truth) if t is None),
            )
    return out


def baseline_of(family: str) -> tuple[str, str]:
    """The variant a row is compared with: the daemon's vote of the (first) embedder."""
    return (family.split("+")[0], "vote")


# --------------------------------------------------------------------------- command


def _parse_pairs(text: str, embedders: Sequence[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("+")
        if not sep or a not in EMBEDDERS or b not in EMBEDDERS or a == b:
            raise click.BadParameter(f"{part!r}: use FIRST+SECOND of {', '.join(EMBEDDERS)}", param_hint="--pairs")
        if a not in embedders or b not in embedders:
            raise click.BadParameter(f"{part!r}: both must be in --embedders", param_hint="--pairs")
        out.append((a, b))
    return out


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 3,5", param_hint="--track-faces") from None
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"{text!r}: give at least one length >= 1", param_hint="--track-faces")
    return ks


@click.command("tracks")
@click.option(
    "--root", type=click.Path(path_type=Path, file_okay=False), default=Path("../shared/data/faces/identities"),
    show_default=True, help="Folder of <ID>/*.jpg, split by person into a tuning and a report half.",
)
@click.option("--embedders", "embedder_names", default="mobileface,foamliu,dlib", show_default=True,
              help=f"Comma-separated embedders, of: {', '.join(EMBEDDERS)}.")
@click.option("--pairs", "pair_text", default=DEFAULT_PAIRS, show_default=True,
              help="Second-opinion pairs FIRST+SECOND: FIRST votes on every face, SECOND only on tracks FIRST "
                   "leaves unnamed ('' = none).")
@study_model_options
@click.option("--track-faces", "ks_text", default="3,5", show_default=True,
              help="Track lengths K to measure (embedded faces per track), comma-separated.")
@click.option("--enrol", type=click.IntRange(min=1), default=2, show_default=True,
              help="Images enrolled per known person.")
@click.option("--unknown-share", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2, show_default=True,
              help="Share of each half's people never enrolled.")
@click.option("--seeds", default="0-9", show_default=True,
              help="Seeds of the choice of strangers, e.g. 0-9: the first one's table, mean and spread over all.")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="Index hits per face (index.rec_topk).")
@click.option("--margin", type=click.FloatRange(min=0.0), default=0.02, show_default=True,
              help="Lead of the best label over the next one needed by the single-face rule (index.margin).")
@click.option("--max-unknown-named", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="Share of the tuning half's stranger tracks allowed a name when a threshold is chosen.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/streamd-levers"),
              show_default=True, help="Feature caches shared with `eval levers` (.npz, keyed by the models).")
@click.option("--timing-images", type=click.IntRange(min=0), default=40, show_default=True,
              help="Images to time each embedder on, for the second opinion's cost (0 = no timing).")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON.")
def command(root: Path, embedder_names: str, pair_text: str, foamliu_model: Path | None,
            mobileface_model: Path | None, yunet_model: Path | None, scrfd_model: Path | None, ks_text: str,
            enrol: int, unknown_share: float, seeds: str, topk: int,
            margin: float, max_unknown_named: float, cache_dir: Path, timing_images: int,
            json_file: Path | None) -> None:
    """Track-level naming: the daemon's vote against a track template, combinations, and a second opinion.

    Tracks are K real photos of one person; thresholds are chosen on the tuning half (at most
    --max-unknown-named of the stranger tracks named) and figures are the report half's.
    """

    # The same study set-up (and detection key) as `eval levers`, so that the caches are shared.
    study = open_study(root, embedder_names, cache_dir, foamliu_model=foamliu_model,
                       mobileface_model=mobileface_model, yunet_model=yunet_model, scrfd_model=scrfd_model)
    names, halves, embedders = study.names, study.halves, study.embedders
    yunet, scrfd, det_key, max_pixels = study.yunet, study.scrfd, study.det_key, study.max_pixels
    pairs = _parse_pairs(pair_text, names)
    ks = _parse_ks(ks_text)
    seed_list = _parse_seeds(seeds)
    splits = {
        (h, s, k): split_people(halves[h], enrol=enrol, probes=k, unknown_share=unknown_share, seed=s)
        for h in halves for s in seed_list for k in ks
    }
    needed: dict[Path, None] = {}
    for split in splits.values():
        for imgs in split.gallery.values():
            needed.update(dict.fromkeys(imgs))
        needed.update(dict.fromkeys(p for _, p in split.known_probes + split.unknown_probes))
    feats = compute_features(list(needed), embedders, yunet, scrfd, cache_dir, det_key, max_pixels)
    vectors = {n: feats.vectors(n, "yunet", False) for n in names}

    settings = TrackingSettings()
    rules = DecisionRules.from_settings(settings, 0.0)
    # clearly_unknown_below defaults to a share of the vote threshold: the share, since each
    # first embedder's vote has its own threshold here.
    ratio = settings.clearly_unknown_threshold(1.0)

    from tqdm import tqdm

    results: dict[tuple[int, int], dict[tuple[str, str], Result]] = {}
    # The same rule with every threshold chosen on the report half itself: how well each variant
    # separates enrolled people from strangers, without the noise of carrying a threshold over.
    own: dict[tuple[int, int], dict[tuple[str, str], Result]] = {}
    counts: dict[tuple[int, int], dict[str, tuple[int, int]]] = {}
    jobs = [(k, s) for k in ks for s in seed_list]
    for k, s in tqdm(jobs, desc="seeds x track lengths", unit="run", disable=None, dynamic_ncols=True):
        half_scores = {}
        for h in halves:
            tracks = make_tracks(splits[(h, s, k)], k, feats)
            scores = {n: score_tracks(tracks, vectors[n], topk) for n in names}
            for a, b in pairs:
                scores[f"{a}+{b}"] = fuse_scores(scores[a], scores[b], topk)
            half_scores[h] = HalfScores(tracks, scores)
        counts[(k, s)] = {h: (len(v.tracks.known), len(v.tracks.strangers)) for h, v in half_scores.items()}
        results[(k, s)] = evaluate(half_scores["tune"], half_scores["report"], names, pairs, rules, margin,
                                   max_unknown_named, ratio)
        own[(k, s)] = evaluate(half_scores["report"], half_scores["report"], names, pairs, rules, margin,
                               max_unknown_named, ratio)

    costs = time_costs(feats, embedders, yunet, scrfd, timing_images, max_pixels) if timing_images else {}
    _print_report(root, halves, ks, seed_list, results, own, counts, costs, rules, topk, margin, max_unknown_named)
    write_json(json_file, {
        "root": str(root), "embedders": {n: e.fingerprint for n, e in embedders.items()},
        "pairs": [f"{a}+{b}" for a, b in pairs], "track_faces": ks, "enrol": enrol,
        "unknown_share": unknown_share, "seeds": seed_list, "topk": topk, "margin": margin,
        "max_unknown_named": max_unknown_named,
        "rules": {"min_votes": rules.min_votes, "min_margin": rules.min_margin, "revise_margin": rules.revise_margin},
        "costs_ms": costs,
        "results": [
            {"track_faces": k, "seed": s, "family": fam, "variant": var,
             "tracks": {"tune": counts[(k, s)]["tune"], "report": counts[(k, s)]["report"]},
             "thresholds": {n: (t if math.isfinite(t) else None) for n, t in r.thresholds.items()},
             "tune": r.tune.to_dict(), "report": r.report.to_dict(),
             "report_own_thresholds": own[(k, s)][(fam, var)].report.to_dict(),
             "second_known": r.second_known, "second_strangers": r.second_strangers}
            for (k, s), res in results.items() for (fam, var), r in res.items()
        ],
    })


def _print_report(root: Path, halves: dict[str, Any], ks: list[int], seeds: list[int],
                  results: dict[tuple[int, int], dict[tuple[str, str], Result]],
                  own: dict[tuple[int, int], dict[tuple[str, str], Result]],
                  counts: dict[tuple[int, int], dict[str, tuple[int, int]]], costs: dict[str, float],
                  rules: DecisionRules, topk: int, margin: float, max_unknown_named: float) -> None:
    s0 = seeds[0]
    click.echo(f"Track-level naming on {root}: tuning half {len(halves['tune'])} people, report half "
               f"{len(halves['report'])} people (streamd.eval.split)")
    for k in ks:
        c = counts[(k, s0)]
        click.echo(f"  K={k}: tracks (enrolled / strangers) tune {c['tune'][0]} / {c['tune'][1]}, "
                   f"report {c['report'][0]} / {c['report'][1]} (seed {s0})")
    click.echo(f"vote: min_votes {rules.min_votes}, min_margin {rules.min_margin:g}, revise_margin "
               f"{rules.revise_margin:g}, top-k {topk}, every face weight 1; single-face rule margin {margin:g}")
    click.echo(f"threshold(s): lowest with <= {100 * max_unknown_named:g} % of the tuning half's stranger tracks named")
    for k in ks:
        click.echo("")
        click.echo(f"K={k}, report half, seed {s0}. gain/loss: enrolled tracks named rightly by the variant and not "
                   "by the (first) embedder's vote, and the reverse; p: McNemar exact; own: named right with the "
                   "threshold(s) chosen by the same rule on the report half itself")
        header = (f"  {'family':<20} {'variant':<33} | {'named right':>11} | {'wrong':>7} | {'strangers named':>15} | "
                  f"{'gain/loss':>9} {'p':>6} | {'own':>7} | threshold(s)")
        click.echo(header)
        click.echo("  " + "-" * (len(header) + 10))
        res = results[(k, s0)]
        last = None
        for (fam, var), r in res.items():
            if last is not None and fam != last:
                click.echo("")
            last = fam
            rep = r.report
            base = res[baseline_of(fam)].report
            gain, loss, p = paired(rep, base)
            is_base = (fam, var) == baseline_of(fam)
            gl = "" if is_base else f"+{gain}/-{loss}"
            ps = "" if is_base else f"{p:.3f}"
            click.echo(f"  {fam:<20} {var:<33} | {pct(rep.correct, rep.known):>11} | {pct(rep.wrong, rep.known):>7} | "
                       f"{pct(rep.unknown_named, rep.unknown):>8} ({rep.unknown_named:>2}/{rep.unknown:<3}) | "
                       f"{gl:>9} {ps:>6} | {pct(own[(k, s0)][(fam, var)].report.correct, rep.known):>7} | "
                       f"{_threshold_text(r.thresholds)}")
    if len(seeds) > 1:
        for k in ks:
            click.echo("")
            click.echo(f"K={k}, over seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} choices of strangers, thresholds "
                       "re-chosen on each tuning half): mean +- sd on the report half; delta = variant - vote, "
                       "per seed")
            header = (f"  {'family':<20} {'variant':<33} | {'named right':>14} | {'wrong':>12} | "
                      f"{'strangers named':>15} | {'delta right':>13} | {'better/worse':>12} | {'own: right':>14} | "
                      f"{'delta':>13} | {'2nd model runs':>20}")
            click.echo(header)
            click.echo("  " + "-" * len(header))
            last = None
            for fam, var in results[(k, s0)]:
                if last is not None and fam != last:
                    click.echo("")
                last = fam
                rs = [results[(k, s)][(fam, var)] for s in seeds]
                bs = [results[(k, s)][baseline_of(fam)] for s in seeds]
                right = [100.0 * r.report.correct / r.report.known for r in rs]
                wrong = [100.0 * r.report.wrong / r.report.known for r in rs]
                fa = [100.0 * r.report.unknown_named / max(1, r.report.unknown) for r in rs]
                delta = [100.0 * (r.report.correct - b.report.correct) / r.report.known for r, b in zip(rs, bs)]
                is_base = (fam, var) == baseline_of(fam)
                os_ = [own[(k, s)][(fam, var)].report for s in seeds]
                ob = [own[(k, s)][baseline_of(fam)].report for s in seeds]
                own_right = [100.0 * r.correct / r.known for r in os_]
                own_delta = [100.0 * (r.correct - b.correct) / r.known for r, b in zip(os_, ob)]
                odl = "" if is_base else _mean_sd(own_delta, signed=True)
                dl = "" if is_base else _mean_sd(delta, signed=True)
                bw = "" if is_base else f"{sum(d > 0 for d in delta)}/{sum(d < 0 for d in delta)}"
                second = ""
                if "2nd opinion" in var:
                    kn = [100.0 * r.second_known / r.report.known for r in rs]
                    st = [100.0 * r.second_strangers / max(1, r.report.unknown) for r in rs]
                    second = f"{statistics.mean(kn):4.1f} % / {statistics.mean(st):5.1f} %"
                click.echo(f"  {fam:<20} {var:<33} | {_mean_sd(right):>14} | {_mean_sd(wrong):>12} | "
                           f"{_mean_sd(fa):>15} | {dl:>13} | {bw:>12} | {_mean_sd(own_right):>14} | {odl:>13} | "
                           f"{second:>20}")
        click.echo("")
        click.echo("2nd model runs: share of the report half's enrolled / stranger tracks the second model embedded")
    if costs:
        click.echo("")
        click.echo("CPU cost (median ms per face, one thread, on this machine):")
        for key, v in costs.items():
            click.echo(f"  {key:<32} {v:8.2f} ms")
        click.echo("second opinion: cost per track that needs it = K x the second model's ms per face")
        for k in ks:
            for fam, var in results[(k, s0)]:
                if "2nd opinion" not in var:
                    continue
                second = fam.split("+")[1]
                per_face = costs.get(f"{second} embedding per face")
                if per_face is None:
                    continue
                rs = [results[(k, s)][(fam, var)] for s in seeds]
                kn = statistics.mean(r.second_known / r.report.known for r in rs)
                st = statistics.mean(r.second_strangers / max(1, r.report.unknown) for r in rs)
                click.echo(f"  K={k} {fam:<20} {var:<33}: {k * per_face:7.1f} ms per track that needs it; "
                           f"{kn * k * per_face:7.1f} ms per enrolled track, {st * k * per_face:7.1f} ms per stranger "
                           f"track on average")


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    """``mean +- sd`` of percentages (sd 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}5.2f} +- {sd:4.2f}"

"""`streamd eval gate`: the tracker's same-person gate for an embedder, calibrated from data.

A tracker that sees a new face in a track must decide whether it is still the same person. It
compares the face's feature with the track's (cosine similarity) and keeps the face in the track
only when the similarity reaches the *gate*. The gate is a property of the embedder's similarity
distribution, not of the recognition threshold: this command measures that distribution on
labelled images and picks the lowest similarity at which two *different* people pass at most
``--far`` of the time (the false-accept rate of the gate), and says how often two images of the
*same* person fall below it (a track would then be split, which costs a re-identification, while
a wrong pass mixes two people's votes).

One feature per image (its largest face) is computed, on the tuning half of the identities by
default (:mod:`streamd.eval.split`, same-person folders merged). Every same-person pair is
scored, and every different-person pair, or a seeded uniform sample of them when there are more
than ``--max-different-pairs``.

The arithmetic (:func:`pair_similarities`, :func:`lowest_threshold`, :func:`gate_curve`) is
kept apart from the command so that ``eval ident`` calibrates its open-set threshold with the
same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
import click
import numpy as np

from streamd.eval.features import (
    DatasetError,
    describe_engine,
    engine_options,
    eval_settings,
    open_features,
    pct,
    write_json,
)
from streamd.eval.split import HALVES, select_people

#: Largest relative error tolerated when turning a share into a count (0.29 * 100 is 28.999...).
_SHARE_EPS = 1e-9


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class PairScores:
    """Cosine similarities of same-person and different-person image pairs."""

    same: np.ndarray
    different: np.ndarray
    different_total: int  # every different-person pair there is; ``len(different)`` when not sampled

    @property
    def sampled(self) -> bool:
        """Whether ``different`` is a sample of the different-person pairs rather than all of them."""
        return len(self.different) < self.different_total


def allowed_count(n: int, max_share: float) -> int:
    """How many of ``n`` items may pass when at most ``max_share`` of them may."""
    return max(0, math.floor(max_share * n + _SHARE_EPS * max(1, n)))


def lowest_threshold(
    scores: Sequence[float] | np.ndarray, max_share: float, *, step: float, low: float = -1.0
) -> float:
    """The lowest multiple of ``step`` (not under ``low``) at which at most ``max_share`` of ``scores`` pass.

    A score passes a threshold ``t`` when it is ``>= t`` (the daemon's rule: a score equal to the
    threshold passes). Raising ``t`` never lets more scores pass, so the lowest such ``t`` is the
    step just above the score ranked ``allowed + 1`` from the top. ``-inf`` stands for an item
    that never passes: it counts in the share. The result may exceed 1 when even the top scores
    may not pass (identical images score 1). When nothing needs keeping out, ``low`` (on the grid)
    is returned.
    """
    if step <= 0:
        raise ValueError(f"step must be positive, not {step}")
    # -inf (e.g. a probe the margin never lets be named) never passes but counts in the share.
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    low_m = math.ceil(round(low / step, 9))
    allowed = allowed_count(len(values), max_share)
    if allowed >= len(values):
        return _grid(low_m, step)
    pivot = float(np.sort(values)[::-1][allowed])  # this one must be kept out: t > pivot
    if pivot == -np.inf:
        return _grid(low_m, step)
    m = max(low_m, math.floor(pivot / step) + 1)

    def passing(k: int) -> int:
        return int(np.count_nonzero(values >= _grid(k, step)))

    # floor() on floats can land one step off either way; settle on the exact grid point.
    while passing(m) > allowed:
        m += 1
    while m > low_m and passing(m - 1) <= allowed:
        m -= 1
    return _grid(m, step)


def _grid(m: int, step: float) -> float:
    return round(m * step, 10)


@dataclass(frozen=True)
class CurvePoint:
    """At one similarity: the share of different-person pairs at or above it, of same-person pairs below it."""

    similarity: float
    different_pass: float
    same_below: float


def gate_curve(scores: PairScores, grid: Sequence[float]) -> list[CurvePoint]:
    """The two error shares of a gate at each similarity of ``grid``."""
    same, diff = np.sort(scores.same), np.sort(scores.different)
    points = []
    for t in grid:
        # searchsorted 'left' counts the values < t: below the gate; the rest are >= t and pass.
        diff_pass = (len(diff) - np.searchsorted(diff, t, side="left")) / len(diff) if len(diff) else 0.0
        same_below = np.searchsorted(same, t, side="left") / len(same) if len(same) else 0.0
        points.append(CurvePoint(float(t), float(diff_pass), float(same_below)))
    return points


@dataclass(frozen=True)
class Gate:
    """The gate at one false-accept rate, with both of its error shares."""

    far: float
    gate: float
    different_pass: float
    same_below: float


def gate_at_far(scores: PairScores, far: float, *, step: float) -> Gate:
    """The lowest similarity (to ``step``) at which different people pass at most ``far`` of the time."""
    t = lowest_threshold(scores.different, far, step=step)
    point = gate_curve(scores, [t])[0]
    return Gate(far, t, point.different_pass, point.same_below)


def curve_grid(scores: PairScores, gates: Sequence[float], *, step: float | None = None, rows: int = 16) -> list[float]:
    """Similarities for the printed curve: from the different-pair median to the same-pair median (and the gates).

    Without ``step``, the smallest of a few round steps that covers the range in at most ``rows`` rows.
    """
    centres = [float(np.median(a)) for a in (scores.different, scores.same) if len(a)]
    lo, hi = min([*centres, *gates], default=0.0), max([*centres, *gates], default=1.0)
    if step is None:
        step = next((s for s in (0.005, 0.01, 0.02, 0.025, 0.05, 0.1) if (hi - lo) / s <= rows - 1), 0.1)
    first, last = math.floor(round(lo / step, 9)), math.ceil(round(hi / step, 9))
    return [_grid(k, step) for k in range(first, last + 1)]


def pair_similarities(
    vectors: np.ndarray, labels: Sequence[str], *, max_different: int, seed: int, block: int = 1024
) -> PairScores:
    """Cosine similarities of every same-label pair and of the different-label pairs.

    ``vectors`` are L2-normalised rows. Different-label pairs are all taken when there are at
    most ``max_different`` of them, else a uniform sample of that many distinct pairs drawn with
    ``seed`` (the same vectors, labels and seed give the same sample).
    """
    x = np.asarray(vectors, dtype=np.float32)
    names, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    n = len(x)
    if len(codes) != n:
        raise ValueError(f"{n} vectors but {len(codes)} labels")
    counts = np.bincount(codes, minlength=len(names))

    same_parts = []
    for code in range(len(names)):
        rows = x[codes == code]
        if len(rows) > 1:
            same_parts.append((rows @ rows.T)[np.triu_indices(len(rows), k=1)])
    same = np.concatenate(same_parts).astype(np.float64) if same_parts else np.zeros(0)

    total = int((n * n - int((counts.astype(np.int64) ** 2).sum())) // 2)
    if total <= max_different:
        parts = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            sims = x[start:stop] @ x.T
            i = np.arange(start, stop)[:, None]
            keep = (np.arange(n)[None, :] > i) & (codes[None, :] != codes[start:stop, None])
            parts.append(sims[keep])
        different = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    else:
        i, j = _sample_pairs(codes, max_different, seed)
        different = np.einsum("ij,ij->i", x[i], x[j]).astype(np.float64)
    return PairScores(same, different, total)


def _sample_pairs(codes: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct unordered index pairs with different codes, uniformly, in a seeded order."""
    n = len(codes)
    rng = np.random.default_rng(seed)
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < count:
        draw = int(1.3 * (count - len(keys))) + 1024
        a, b = rng.integers(0, n, draw), rng.integers(0, n, draw)
        ok = codes[a] != codes[b]
        lo, hi = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
        keys = np.unique(np.concatenate([keys, lo.astype(np.int64) * n + hi]))
    keys = np.sort(rng.choice(keys, size=count, replace=False))
    return keys // n, keys % n


# --------------------------------------------------------------------------- command


def _far_value(ctx: click.Context, param: click.Parameter, values: tuple[float, ...]) -> tuple[float, ...]:
    for v in values:
        if not 0.0 <= v < 1.0:
            raise click.BadParameter(f"{v:g} is not a share in [0, 1)")
    return values


@click.command("gate")
@click.option("--root", required=True, type=click.Path(path_type=Path, file_okay=False), help="Folder of <ID>/*.jpg.")
@click.option(
    "--half", type=click.Choice(HALVES), default="tune", show_default=True,
    help="Which half of the identities to measure on (streamd.eval.split); defaults are chosen on 'tune'.",
)
@click.option(
    "--far", "fars", type=float, multiple=True, default=(0.001,), show_default=True, callback=_far_value,
    help="Largest share of different-person pairs the gate may pass; repeat for more (the first is the gate).",
)
@click.option(
    "--step", type=click.FloatRange(min=0.0, min_open=True), default=0.001, show_default=True,
    help="The gate is rounded up to a multiple of this.",
)
@click.option(
    "--curve-step", type=click.FloatRange(min=0.0, min_open=True), default=None,
    help="Similarity step of the printed curve (default: a round step giving at most 16 rows).",
)
@click.option(
    "--max-different-pairs", type=click.IntRange(min=1), default=2_000_000, show_default=True,
    help="Score every different-person pair up to this many, else a seeded sample of this many.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the different-pair sample.")
@engine_options
def command(root: Path, half: str, fars: tuple[float, ...], step: float, curve_step: float | None,
            max_different_pairs: int, seed: int, config: Path | None, detector: str | None, det_model: str | None,
            det_model_path: Path | None, embedder: str | None, emb_model_path: Path | None,
            threshold: float | None, gate: bool, cache_file: Path | None, json_file: Path | None) -> None:
    """Calibrate the tracker's same-person gate: similarities of same- and different-person image pairs.

    Prints a curve (for each similarity: the share of different-person pairs at or above it, and
    of same-person pairs below it) and the gate: the lowest similarity at which different people
    pass at most --far of the time, with the share of same-person pairs it would split.
    (--threshold is accepted like every eval command's but plays no part here.)
    """
    from streamd.eval.ident import list_people

    settings = eval_settings(
        config, detector=detector, det_model=det_model, det_model_path=det_model_path,
        embedder=embedder, emb_model_path=emb_model_path, threshold=threshold,
    )
    folders = list_people(root)
    people = select_people(folders, half)  # type: ignore[arg-type]
    if len(people) < 2:
        raise DatasetError(f"{root}: the {half} half has {len(people)} identity(ies); at least 2 are needed")
    engine, store = open_features(settings, gate=gate, cache_file=cache_file)
    paths = [p for images in people.values() for p in images]
    features = store.compute_all(paths, desc="embedding")

    vectors, labels, misses = [], [], []
    for name, images in people.items():
        for path in images:
            f = features[path]
            if f.vector is None:
                misses.append(f"{f.status:<10} {path}")
            else:
                vectors.append(f.vector)
                labels.append(name)
    if len(set(labels)) < 2:
        raise DatasetError(f"{root}: fewer than 2 identities have an image with a usable face")
    scores = pair_similarities(np.stack(vectors), labels, max_different=max_different_pairs, seed=seed)
    if not len(scores.same):
        raise DatasetError(f"{root}: no identity has two images with a usable face; no same-person pairs")
    gates = [gate_at_far(scores, far, step=step) for far in fars]
    curve = gate_curve(scores, curve_grid(scores, [g.gate for g in gates], step=curve_step))

    def quantiles(a: np.ndarray) -> dict[str, float]:
        q = np.quantile(a, [0.01, 0.5, 0.99])
        return {"min": float(a.min()), "p1": float(q[0]), "median": float(q[1]), "p99": float(q[2]),
                "max": float(a.max())}

    q_same, q_diff = quantiles(scores.same), quantiles(scores.different)
    click.echo(
        f"Same-person gate on {root}, {half} half: {len(people)} identities ({len(folders)} folders, "
        f"same-person folders merged)"
    )
    click.echo(f"engine: {describe_engine(engine)}{', quality gate on' if gate else ''}")
    click.echo(f"images: {len(paths)} ({len(misses)} without a usable face, left out)")
    sample = f", a sample of {len(scores.different)} (seed {seed})" if scores.sampled else ""
    click.echo(f"pairs: {len(scores.same)} same-person; {scores.different_total} different-person{sample}")
    for what, q in (("same-person", q_same), ("different-person", q_diff)):
        click.echo(
            f"  {what:<16} similarity: median {q['median']:.3f}, 1 % {q['p1']:.3f}, 99 % {q['p99']:.3f}, "
            f"max {q['max']:.3f}"
        )
    click.echo("")
    click.echo("  similarity | different people at or above | same person below")
    click.echo("  -----------+------------------------------+------------------")
    for p in curve:
        click.echo(
            f"    {p.similarity:7.3f}  |           {p.different_pass * 100:8.4f} %         |    {pct(p.same_below, 1)}"
        )
    click.echo("")
    for g in gates:
        click.echo(
            f"gate at FAR {g.far:g}: {g.gate:.3f} (different people pass {g.different_pass * 100:.4f} %, "
            f"same person below {g.same_below * 100:.1f} %)"
        )
    write_json(
        json_file,
        {
            "root": str(root),
            "half": half,
            "identities": len(people),
            "folders": len(folders),
            "engine": describe_engine(engine),
            "fingerprint": engine.fingerprint,
            "quality_gate": gate,
            "images": len(paths),
            "images_without_face": misses,
            "same_pairs": len(scores.same),
            "different_pairs": len(scores.different),
            "different_pairs_total": scores.different_total,
            "sampled": scores.sampled,
            "seed": seed,
            "same_similarity": q_same,
            "different_similarity": q_diff,
            "curve": [asdict(p) for p in curve],
            "gates": [asdict(g) for g in gates],
            "gate": gates[0].gate,
            "far": gates[0].far,
        },
    )

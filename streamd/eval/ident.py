"""`streamd eval ident`: open-set identification on an ``<ID>/*.jpg`` tree.

A seeded share of the people is held out as "unknown" (never enrolled). Each other person is
enrolled with their first ``--enrol`` images (sorted by file name) into a real FeatureLibrary;
their next ``--probes`` images are probes. Each probe's largest face is searched (top-k =
``index.rec_topk``) and named by the same open-set rule the daemon uses (``decide`` with the
threshold and ``index.margin``). Known probes end as named correctly, wrongly named or rejected
(a probe without a face is rejected); unknown probes given any name are false accepts.

People are taken from one half of the split (:mod:`streamd.eval.split`, ``--half``, default the
report half), after the folders known to hold one person under two names are merged. Besides the
threshold grid, the lowest threshold at which at most ``--max-false-accept`` of the unknown probes
are named is printed: run on the tuning half, that is how an embedder's default threshold is
chosen; the report half then says what that threshold does on people it was not chosen on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from streamd.eval.features import (
    DatasetError,
    ImageFeature,
    configured_threshold,
    describe_engine,
    engine_options,
    eval_settings,
    open_features,
    pct,
    write_json,
)
from streamd.eval.gate import lowest_threshold
from streamd.eval.split import HALVES, select_people
from streamd.images import is_image_path

#: Calibrated thresholds are multiples of this.
CALIBRATION_STEP = 0.005


@dataclass(frozen=True)
class Split:
    """Who is enrolled with which images, and which images probe."""

    gallery: dict[str, list[Path]]
    known_probes: list[tuple[str, Path]]
    unknown_probes: list[tuple[str, Path]]
    unknown_people: list[str] = field(default_factory=list)


def list_people(root: Path) -> dict[str, list[Path]]:
    """``<root>/<ID>/*`` images per ID (sorted), skipping folders without images."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected <ID>/*.jpg inside)")
    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
        if images:
            people[folder.name] = images
    if not people:
        raise DatasetError(f"{root}: no <ID>/ folders with images found")
    return people


def split_people(
    people: dict[str, list[Path]], *, enrol: int, probes: int, unknown_share: float, seed: int
) -> Split:
    """Hold out ``round(unknown_share * people)`` people (seeded), enrol the rest, pick probes.

    ``probes`` = 0 probes with every image after the enrolled ones (for unknown people: every image).
    """
    names = sorted(people)
    n_unknown = int(round(unknown_share * len(names)))
    unknown = set(random.Random(seed).sample(names, n_unknown))
    limit = probes if probes > 0 else None
    gallery: dict[str, list[Path]] = {}
    known_probes: list[tuple[str, Path]] = []
    unknown_probes: list[tuple[str, Path]] = []
    for name in names:
        images = people[name]
        if name in unknown:
            unknown_probes += [(name, p) for p in images[:limit]]
            continue
        gallery[name] = images[:enrol]
        rest = images[enrol:]
        known_probes += [(name, p) for p in rest[:limit]]
    return Split(gallery, known_probes, unknown_probes, sorted(unknown))


@dataclass(frozen=True)
class Outcome:
    """Probe outcomes at one threshold."""

    threshold: float
    correct: int
    wrong: int
    rejected: int
    known: int
    false_accept: int
    unknown: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["correct_rate"] = self.correct / self.known if self.known else 0.0
        d["wrong_rate"] = self.wrong / self.known if self.known else 0.0
        d["rejected_rate"] = self.rejected / self.known if self.known else 0.0
        d["false_accept_rate"] = self.false_accept / self.unknown if self.unknown else 0.0
        return d


def score_probes(
    library: Any,
    known: list[tuple[str, ImageFeature]],
    unknown: list[tuple[str, ImageFeature]],
    thresholds: list[float],
    *,
    margin: float,
    topk: int,
) -> list[Outcome]:
    """Search every probe once, then decide at each threshold."""
    from streamd.index.decision import decide

    def hits(probes: list[tuple[str, ImageFeature]]) -> list[list[Any] | None]:
        vecs = [f.vector for _, f in probes if f.vector is not None]
        found = iter(library.search(np.stack(vecs), topk) if vecs else [])
        return [next(found) if f.vector is not None else None for _, f in probes]

    known_hits, unknown_hits = hits(known), hits(unknown)
    outcomes = []
    for t in thresholds:
        correct = wrong = rejected = false_accept = 0
        for (label, _), matches in zip(known, known_hits):
            name = decide(matches, t, margin).label if matches is not None else None
            if name is None:
                rejected += 1
            elif name == label:
                correct += 1
            else:
                wrong += 1
        for _, matches in zip(unknown, unknown_hits):
            if matches is not None and decide(matches, t, margin).label is not None:
                false_accept += 1
        outcomes.append(Outcome(t, correct, wrong, rejected, len(known), false_accept, len(unknown)))
    return outcomes


def naming_scores(library: Any, unknown: list[tuple[str, ImageFeature]], *, margin: float, topk: int) -> np.ndarray:
    """For each probe, the highest threshold at which the daemon's rule gives it a name (-inf: never).

    ``decide`` names a probe when its best score reaches the threshold and its margin holds; the
    margin does not depend on the threshold, so a probe is named at ``t`` exactly when its score
    here is ``>= t``. A probe without a face is never named.
    """
    from streamd.index.decision import decide

    vecs = [f.vector for _, f in unknown if f.vector is not None]
    found = iter(library.search(np.stack(vecs), topk) if vecs else [])
    out = np.full(len(unknown), -np.inf)
    for k, (_, f) in enumerate(unknown):
        if f.vector is None:
            continue
        d = decide(next(found), -np.inf, margin)
        if d.label is not None:
            out[k] = d.score
    return out


def calibrate_threshold(
    library: Any,
    known: list[tuple[str, ImageFeature]],
    unknown: list[tuple[str, ImageFeature]],
    max_false_accept: float,
    *,
    margin: float,
    topk: int,
    step: float = CALIBRATION_STEP,
) -> Outcome:
    """The outcomes at the lowest threshold (a multiple of ``step``) naming at most that share of unknown probes."""
    t = lowest_threshold(naming_scores(library, unknown, margin=margin, topk=topk), max_false_accept, step=step)
    return score_probes(library, known, unknown, [t], margin=margin, topk=topk)[0]


def threshold_grid(default: float, extra: tuple[float, ...]) -> list[float]:
    """The thresholds to report: the given ones, or six around the default (3 steps below, 2 above).

    The step scales with the room above the default, ``(1 - default) / 11``, rounded to 0.01: 0.05
    for ArcFace-style models (default 0.45) and 0.01 for dlib, whose cosines crowd into 0.8-1.0.
    """
    step = max(0.01, round((1.0 - default) / 11.0, 2))
    values = list(extra) if extra else [default + k * step for k in range(-3, 3)]
    values.append(default)
    return sorted({round(min(1.0, max(-1.0, v)), 4) for v in values})


@click.command("ident")
@click.option("--root", required=True, type=click.Path(path_type=Path, file_okay=False), help="Folder of <ID>/*.jpg.")
@click.option(
    "--half", type=click.Choice(HALVES), default="report", show_default=True,
    help="Which half of the identities to use (streamd.eval.split): tune to choose defaults, report to judge them.",
)
@click.option("--enrol", type=click.IntRange(min=1), default=2, show_default=True, help="Images enrolled per known person.")
@click.option(
    "--probes", type=click.IntRange(min=0), default=3, show_default=True,
    help="Probe images per person (the images after the enrolled ones; 0 = all).",
)
@click.option(
    "--unknown-share", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2, show_default=True,
    help="Share of people held out as never enrolled.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the choice of unknown people.")
@click.option("--margin", type=click.FloatRange(min=0.0), default=None, help="Override index.margin.")
@click.option(
    "--thresholds", type=str, default=None,
    help="Comma-separated thresholds to report (default: around the configured one).",
)
@click.option(
    "--max-false-accept", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.01, show_default=True,
    help=f"Also print the lowest threshold (a multiple of {CALIBRATION_STEP}) naming at most this share of "
    "unknown probes.",
)
@engine_options
def command(root: Path, half: str, enrol: int, probes: int, unknown_share: float, seed: int, margin: float | None,
            thresholds: str | None, max_false_accept: float, config: Path | None, detector: str | None,
            det_model: str | None, det_model_path: Path | None, embedder: str | None, emb_model_path: Path | None,
            threshold: float | None, gate: bool, cache_file: Path | None, json_file: Path | None) -> None:
    """Open-set identification: enrol N images per person, probe with others, hold some people out.

    Prints, at several thresholds (the configured one marked *): known probes named correctly,
    wrongly named and rejected, and unknown probes that were given a name (false accepts); then
    the lowest threshold naming at most --max-false-accept of the unknown probes. People come
    from --half of the fixed split (same-person folders merged): choose on tune, report on report.
    """
    from streamd.index.library import FeatureLibrary

    try:
        extra = tuple(float(v) for v in thresholds.split(",") if v.strip()) if thresholds else ()
    except ValueError:
        raise click.BadParameter(f"{thresholds!r} is not a comma-separated list of numbers", param_hint="--thresholds") from None
    settings = eval_settings(
        config, detector=detector, det_model=det_model, det_model_path=det_model_path,
        embedder=embedder, emb_model_path=emb_model_path, threshold=threshold,
    )
    folders = list_people(root)
    people = select_people(folders, half)  # type: ignore[arg-type]
    if not people:
        raise DatasetError(f"{root}: no identities in the {half} half")
    split = split_people(people, enrol=enrol, probes=probes, unknown_share=unknown_share, seed=seed)
    engine, store = open_features(settings, gate=gate, cache_file=cache_file)
    paths = [p for imgs in split.gallery.values() for p in imgs]
    paths += [p for _, p in split.known_probes] + [p for _, p in split.unknown_probes]
    features = store.compute_all(paths, desc="embedding")

    library = FeatureLibrary.create(engine.dim, index_type="Flat", metric_type="IP", fingerprint=engine.fingerprint)
    vectors, labels, gallery_misses = [], [], []
    for name, images in split.gallery.items():
        for path in images:
            f = features[path]
            if f.vector is None:
                gallery_misses.append(f"{f.status:<10} {path}")
            else:
                vectors.append(f.vector)
                labels.append(name)
    if not vectors:
        raise DatasetError(f"{root}: no gallery image had a usable face; nothing to enrol")
    library.add(np.stack(vectors), labels)
    enrolled = len(set(labels))

    known = [(label, features[p]) for label, p in split.known_probes]
    unknown = [(label, features[p]) for label, p in split.unknown_probes]
    default_t = configured_threshold(settings, engine)
    used_margin = settings.index.margin if margin is None else margin
    outcomes = score_probes(
        library, known, unknown, threshold_grid(default_t, extra), margin=used_margin, topk=settings.index.rec_topk
    )
    calibrated = calibrate_threshold(
        library, known, unknown, max_false_accept, margin=used_margin, topk=settings.index.rec_topk
    )

    no_face_known = sum(f.vector is None for _, f in known)
    no_face_unknown = sum(f.vector is None for _, f in unknown)
    n_people = len(split.gallery) + len(split.unknown_people)
    click.echo(
        f"Open-set identification on {root}: {n_people} people, {len(split.gallery)} enrolled with up to "
        f"{enrol} image(s) each, {len(split.unknown_people)} held out as unknown (seed {seed})"
    )
    click.echo(f"half: {half} ({len(people)} identities of {len(folders)} folders, same-person folders merged)")
    click.echo(f"engine: {describe_engine(engine)}{', quality gate on' if gate else ''}")
    click.echo(
        f"gallery: {len(vectors)} vectors of {enrolled} people ({len(gallery_misses)} gallery image(s) without a usable face)"
    )
    click.echo(
        f"probes: {len(known)} known ({no_face_known} without a face, counted as rejected), "
        f"{len(unknown)} unknown ({no_face_unknown} without a face)"
    )
    click.echo(f"decision: top-{settings.index.rec_topk}, margin {used_margin:g}; * = configured threshold")
    click.echo("")
    click.echo("  threshold | named correctly | wrongly named |  rejected | unknown given a name")
    click.echo("  ----------+-----------------+---------------+-----------+---------------------")
    for o in outcomes:
        mark = "*" if abs(o.threshold - round(default_t, 4)) < 1e-9 else " "
        click.echo(
            f"  {mark} {o.threshold:6.3f}  |    {pct(o.correct, o.known)}     |   {pct(o.wrong, o.known)}   "
            f"|  {pct(o.rejected, o.known)}  |   {pct(o.false_accept, o.unknown)}"
        )
    click.echo("")
    c = calibrated
    click.echo(
        f"lowest threshold naming at most {max_false_accept * 100:g} % of unknown probes (step {CALIBRATION_STEP}): "
        f"{c.threshold:.3f}{'' if half == 'tune' else ' (for comparison only: defaults are chosen on the tune half)'}"
    )
    click.echo(
        f"  named correctly {pct(c.correct, c.known).strip()}, wrongly named {pct(c.wrong, c.known).strip()}, "
        f"rejected {pct(c.rejected, c.known).strip()}, unknown given a name {pct(c.false_accept, c.unknown).strip()} "
        f"({c.false_accept} of {c.unknown})"
    )
    if c.threshold <= -1.0:
        click.echo(f"  (the margin {used_margin:g} alone keeps enough unknown probes nameless: any threshold will do)")
    if gallery_misses:
        click.echo("")
        click.echo("gallery images without a usable face:")
        for line in gallery_misses:
            click.echo(f"  {line}")
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
            "people": n_people,
            "enrolled_people": enrolled,
            "unknown_people": split.unknown_people,
            "enrol": enrol,
            "gallery_vectors": len(vectors),
            "gallery_without_face": gallery_misses,
            "known_probes": len(known),
            "unknown_probes": len(unknown),
            "known_probes_without_face": no_face_known,
            "unknown_probes_without_face": no_face_unknown,
            "topk": settings.index.rec_topk,
            "margin": used_margin,
            "configured_threshold": default_t,
            "results": [o.to_dict() for o in outcomes],
            "max_false_accept": max_false_accept,
            "calibrated": calibrated.to_dict(),
        },
    )

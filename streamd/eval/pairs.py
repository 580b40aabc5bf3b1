"""`streamd eval pairs`: face verification accuracy on a list of image pairs.

Three list formats are read (``--format auto`` tells them apart):

* CSV ``path_a,path_b,same`` (1/0 or true/false; a header row and extra columns are allowed),
  paths relative to ``--root`` (default: the list's folder);
* LFW ``pairs.txt`` / ``pairsDevTest.txt``: an optional count line (``500`` or ``10 300``), then
  ``name n1 n2`` (same person) and ``name1 n1 name2 n2`` (different) lines; images are
  ``<root>/<name>/<name>_<n:04d>.jpg``;
* PaddleX ``pair_label.txt``: ``img1 img2 label`` per line (label 1 = same), paths relative to root.

Every image's largest face is embedded once. A pair whose image has no face (or an unreadable
image) cannot be answered: it counts as wrong in the accuracy figures and is listed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from streamd.eval.features import (
    DatasetError,
    configured_threshold,
    describe_engine,
    engine_options,
    eval_settings,
    open_features,
    pct,
    write_json,
)

FORMATS = ("auto", "csv", "lfw", "paddlex")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", "-1"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Pair:
    """Two images and whether they show the same person."""

    a: Path
    b: Path
    same: bool


# --------------------------------------------------------------------------- parsing


def _label(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DatasetError(f"{where}: the label {value!r} is not 1/0 (same/different)")


def parse_csv_pairs(text: str, root: Path, *, name: str = "pairs") -> list[Pair]:
    """``path_a,path_b,same`` rows; a first row whose third field is not a label is a header."""
    pairs = []
    rows = list(csv.reader(io.StringIO(text)))
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        where = f"{name} line {lineno}"
        if len(row) < 3:
            raise DatasetError(f"{where}: expected path_a,path_b,same, got {len(row)} field(s)")
        if lineno == 1 and row[2].strip().lower() not in _TRUE | _FALSE:
            continue  # header
        pairs.append(Pair(root / row[0].strip(), root / row[1].strip(), _label(row[2], where)))
    return pairs


def _lfw_path(root: Path, person: str, number: str, where: str) -> Path:
    if not number.isdigit():
        raise DatasetError(f"{where}: image number {number!r} is not a number")
    return root / person / f"{person}_{int(number):04d}.jpg"


def parse_lfw_pairs(text: str, root: Path, *, name: str = "pairs") -> list[Pair]:
    """LFW ``pairs.txt``: optional count header, then 3-field (same) and 4-field (different) lines."""
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{name} line {lineno}"
        if len(fields) <= 2 and all(f.isdigit() for f in fields):
            continue  # "500" or "10 300": the count line (also repeated before each fold in some copies)
        if len(fields) == 3:
            person, n1, n2 = fields
            pairs.append(Pair(_lfw_path(root, person, n1, where), _lfw_path(root, person, n2, where), True))
        elif len(fields) == 4:
            p1, n1, p2, n2 = fields
            pairs.append(Pair(_lfw_path(root, p1, n1, where), _lfw_path(root, p2, n2, where), False))
        else:
            raise DatasetError(
                f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2' (LFW pairs format), got {len(fields)} fields"
            )
    return pairs


def parse_paddlex_pairs(text: str, root: Path, *, name: str = "pairs") -> list[Pair]:
    """PaddleX ``pair_label.txt``: ``img1 img2 label`` per line (space or tab separated)."""
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{name} line {lineno}"
        if len(fields) != 3:
            raise DatasetError(f"{where}: expected 'image1 image2 label' (PaddleX pair_label format), got {len(fields)} fields")
        pairs.append(Pair(root / fields[0], root / fields[1], _label(fields[2], where)))
    return pairs


def detect_format(path: Path, text: str) -> str:
    """``csv``, ``lfw`` or ``paddlex`` from the file's name and first data lines."""
    if path.suffix.lower() == ".csv":
        return "csv"
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if "," in line and len(line.split(",")) >= 3:
            return "csv"
        if len(fields) <= 2 and all(f.isdigit() for f in fields):
            return "lfw"  # the count line
        if len(fields) == 3 and fields[0].lower().endswith(_IMAGE_SUFFIXES):
            return "paddlex"
        if len(fields) in (3, 4) and fields[1].isdigit():
            return "lfw"
        break
    raise DatasetError(
        f"{path}: cannot tell the pairs format (CSV path_a,path_b,same; LFW pairs.txt; PaddleX "
        "'img1 img2 label'); pass --format"
    )


def read_pairs(path: Path, root: Path | None = None, fmt: str = "auto") -> list[Pair]:
    """The pairs listed in ``path``; image paths are resolved against ``root`` (default: its folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: pairs file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the pairs file ({exc})") from None
    root = Path(root) if root is not None else path.parent
    if fmt == "auto":
        fmt = detect_format(path, text)
    parser = {"csv": parse_csv_pairs, "lfw": parse_lfw_pairs, "paddlex": parse_paddlex_pairs}[fmt]
    pairs = parser(text, root, name=str(path))
    if not pairs:
        raise DatasetError(f"{path}: no pairs found")
    missing = sorted({str(p) for pair in pairs for p in (pair.a, pair.b) if not p.is_file()})
    if missing:
        hint = " (LFW lists need --root with <Name>/<Name>_0001.jpg)" if fmt == "lfw" else f" (relative to --root {root})"
        raise DatasetError(f"{path}: {len(missing)} listed image(s) not found, e.g. {missing[0]}{hint}")
    return pairs


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class VerificationResult:
    """Verification figures; pairs without a face count as wrong in every accuracy."""

    pairs: int
    same: int
    different: int
    unanswered: int
    best_accuracy: float
    best_threshold: float
    threshold: float
    accuracy: float
    tar: float
    far: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def best_threshold(scores: np.ndarray, same: np.ndarray, total: int) -> tuple[float, float]:
    """The threshold (midway between two scores) with the most correct answers, and that accuracy.

    ``scores``/``same`` are the answerable pairs; ``total`` counts all pairs (the others are wrong).
    A pair is called "same" when its score >= threshold.
    """
    if len(scores) == 0:
        return 0.0, 0.0
    order = np.argsort(scores)
    s, y = scores[order], same[order].astype(np.int64)
    # Threshold just above position i: pairs 0..i are called different, i+1.. are called same.
    diff_below = np.concatenate([[0], np.cumsum(1 - y)])  # different pairs with score < t
    same_above = np.concatenate([[y.sum()], y.sum() - np.cumsum(y)])  # same pairs with score >= t
    correct = diff_below + same_above
    # Only cut between distinct scores.
    cuts = np.concatenate([[True], s[1:] != s[:-1], [True]])
    correct = np.where(cuts, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        t = float(s[0]) - 1e-6
    elif i == len(s):
        t = float(s[-1]) + 1e-6
    else:
        t = float((s[i - 1] + s[i]) / 2.0)
    return t, float(correct[i]) / total


def verify(pairs: list[Pair], scores: list[float | None], threshold: float) -> VerificationResult:
    """Accuracy at the best threshold and accuracy/TAR/FAR at ``threshold``.

    TAR and FAR are what a deployment would see: a pair without a face is never accepted.
    """
    same = np.array([p.same for p in pairs])
    answered = np.array([s is not None for s in scores])
    sc = np.array([s if s is not None else np.nan for s in scores], dtype=np.float64)
    total = len(pairs)
    t_best, acc_best = best_threshold(sc[answered], same[answered], total)
    accepted = answered & (np.nan_to_num(sc, nan=-np.inf) >= threshold)
    correct = answered & (accepted == same)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    return VerificationResult(
        pairs=total,
        same=n_same,
        different=n_diff,
        unanswered=int((~answered).sum()),
        best_accuracy=acc_best,
        best_threshold=t_best,
        threshold=float(threshold),
        accuracy=float(correct.sum()) / total,
        tar=float((accepted & same).sum()) / n_same if n_same else 0.0,
        far=float((accepted & ~same).sum()) / n_diff if n_diff else 0.0,
    )


# --------------------------------------------------------------------------- command


@click.command("pairs")
@click.option(
    "--pairs", "pairs_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
    help="Pairs list: CSV path_a,path_b,same; LFW pairs.txt; or PaddleX pair_label.txt.",
)
@click.option(
    "--root", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Folder the listed paths are relative to (LFW: holds <Name>/<Name>_0001.jpg). Default: the list's folder.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True, help="Pairs list format.")
@engine_options
def command(pairs_file: Path, root: Path | None, fmt: str, config: Path | None, detector: str | None,
            det_model: str | None, det_model_path: Path | None, embedder: str | None,
            emb_model_path: Path | None, threshold: float | None, gate: bool, cache_file: Path | None,
            json_file: Path | None) -> None:
    """Verification accuracy on a list of image pairs (LFW protocol, largest face per image).

    Prints the accuracy at the best threshold on the set, that threshold, and accuracy, true
    accept rate (same pairs accepted) and false accept rate (different pairs accepted) at the
    configured threshold. Images without a face are listed; their pairs count as wrong.
    """
    settings = eval_settings(
        config, detector=detector, det_model=det_model, det_model_path=det_model_path,
        embedder=embedder, emb_model_path=emb_model_path, threshold=threshold,
    )
    pairs = read_pairs(pairs_file, root, fmt)
    engine, store = open_features(settings, gate=gate, cache_file=cache_file)
    features = store.compute_all([p for pair in pairs for p in (pair.a, pair.b)], desc="embedding")
    scores: list[float | None] = []
    for pair in pairs:
        va, vb = features[pair.a].vector, features[pair.b].vector
        scores.append(float(np.dot(va, vb)) if va is not None and vb is not None else None)
    t = configured_threshold(settings, engine)
    result = verify(pairs, scores, t)
    faceless = {str(p): f.status for p, f in features.items() if f.status != "ok"}

    click.echo(f"Verification on {pairs_file}: {result.pairs} pairs ({result.same} same, {result.different} different), {len(features)} images")
    click.echo(f"engine: {describe_engine(engine)}{', quality gate on' if gate else ''}")
    click.echo(f"images without a usable face: {len(faceless)}; pairs that cannot be answered (counted as wrong): {result.unanswered}")
    for path, status in sorted(faceless.items()):
        click.echo(f"  {status:<10} {path}")
    click.echo("")
    click.echo(f"  accuracy at the best threshold  {pct(result.best_accuracy, 1)}   (threshold {result.best_threshold:.3f})")
    click.echo(f"  at the configured threshold {t:.3f}:")
    click.echo(f"    accuracy                      {pct(result.accuracy, 1)}")
    click.echo(f"    TAR (same pairs accepted)     {pct(result.tar, 1)}")
    click.echo(f"    FAR (different pairs accepted){pct(result.far, 1)}")
    write_json(
        json_file,
        {
            "pairs_file": str(pairs_file),
            "engine": describe_engine(engine),
            "fingerprint": engine.fingerprint,
            "quality_gate": gate,
            **result.to_dict(),
            "images": len(features),
            "images_without_face": faceless,
            "scores": [
                {"a": str(p.a), "b": str(p.b), "same": p.same, "score": s} for p, s in zip(pairs, scores)
            ],
        },
    )

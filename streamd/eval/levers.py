"""`streamd eval levers`: which accuracy levers help on people the defaults were never tuned on.

The protocol is `eval ident`'s, on the fixed split of :mod:`streamd.eval.split`: each half is split
on its own (``enrol`` images per person, ``probes`` probes, ``unknown_share`` of the people never
enrolled, ``seed``), a lever's threshold is chosen on the *tuning* half (the lowest one at which at
most ``max_unknown_named`` of the strangers' probes get a name), and the figures are those of the
*report* half at that threshold: known probes named correctly, wrongly named, and strangers' probes
named. Single images, largest face, no quality gate.

Every image is read, detected and embedded once; the expensive parts are cached in ``.npz`` files
under ``--cache-dir``, so every lever is a cheap recombination of the same vectors:

* YuNet finds the largest face; SCRFD runs on the same image and lends its five landmarks to
  the YuNet face it overlaps most (IoU >= 0.3), else the face keeps YuNet's (``align="scrfd"``).
* Each embedder embeds four chips per face: YuNet-aligned, its mirror image, SCRFD-aligned and
  its mirror image. Flip-averaging (``normalise(v + v_mirror)``, what ``engine.embedder.flip``
  does) and mirrored gallery entries are made from these.

Levers (see :class:`Lever`): flip-averaged features, mirrored gallery images, person-mean
templates (instead of or besides the per-image vectors), cohort score normalisation (probe-side:
one shift, or shift and scale, per probe, so the ranking and the margin are untouched and only
the threshold sees the normalised score), score-level fusion of embedders (mean of cosines per
gallery vector) and SCRFD landmarks for alignment. The decision is the daemon's (:func:`decide`):
the nearest gallery vector of each label, the best label named when its score reaches the
threshold and beats the best other label by ``margin``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import click
import numpy as np

from streamd.errors import ImageError, StreamdError
from streamd.eval.features import DatasetError, pct, write_json
from streamd.eval.ident import Split, list_people, split_people
from streamd.eval.split import select_people
from streamd.faces.modelfile import DEV_MODEL_FILES, dev_models_dir, file_sha256
from streamd.faces.vectors import l2_normalise, mirror_chip

Align = Literal["yunet", "scrfd"]
GalleryMode = Literal["images", "mirror", "mean", "images+mean"]
Norm = Literal["none", "cohort-gallery", "cohort-other-half", "tnorm-other-half"]

#: The four chips embedded per face, in the order of the cached arrays' second axis.
VIEWS: tuple[str, ...] = ("yunet", "yunet-mirror", "scrfd", "scrfd-mirror")

#: Embedders this command knows: name -> (kind, default model, mean, std). ``None`` model = dlib's own.
EMBEDDERS: dict[str, tuple[str, str | None, float, float]] = {
    "foamliu": ("onnx", DEV_MODEL_FILES["mobilefacenet"], 127.5, 128.0),
    "mobileface": ("onnx", "/tmp/mobileface.onnx", 127.5, 127.5),
    "dlib": ("dlib", None, 0.0, 1.0),
}

#: Minimum IoU between a YuNet face and an SCRFD face for SCRFD's landmarks to align the YuNet face.
SCRFD_MIN_IOU = 0.3


# --------------------------------------------------------------------------- levers


@dataclass(frozen=True)
class Lever:
    """One way of turning the cached vectors into gallery, probes and scores.

    ``embedders``: more than one = score-level fusion (mean of the cosines per gallery vector).
    ``gallery``: ``images`` (one vector per enrolled image, today's daemon), ``mirror`` (each
    image also enrolled mirrored), ``mean`` (one normalised mean vector per person) or
    ``images+mean`` (both). ``norm``: probe-side cohort normalisation of the best score,
    ``cohort-gallery`` (minus the mean of the probe's top-``k`` cosines to other enrolled people's
    vectors), ``cohort-other-half`` (minus the mean of its top-``k`` cosines to one image of each
    person of the other half, people who are neither enrolled nor probing) or ``tnorm-other-half``
    (``(s - mean) / sd`` over all its cosines to that cohort).
    """

    name: str
    embedders: tuple[str, ...]
    align: Align = "yunet"
    flip: bool = False
    gallery: GalleryMode = "images"
    norm: Norm = "none"
    cost: str = "none"

    @property
    def label(self) -> str:
        return "+".join(self.embedders)


def default_levers(embedders: Sequence[str], cohort_k: int) -> list[Lever]:
    """Every single lever per embedder, a few combinations, and fusion of each pair of embedders."""
    out: list[Lever] = []
    for e in embedders:
        one = (e,)
        out += [
            Lever("baseline", one),
            Lever("flip", one, flip=True, cost="a 2nd embedding per face"),
            Lever("mirror gallery", one, gallery="mirror",
                  cost="2x gallery vectors; a 2nd embedding per enrolled image"),
            Lever("person mean", one, gallery="mean", cost="none (1 vector per person: a smaller index)"),
            Lever("images + mean", one, gallery="images+mean", cost="1 more vector per person"),
            Lever(f"cohort gallery k={cohort_k}", one, norm="cohort-gallery", cost="top-k over the gallery hits"),
            Lever(f"cohort other k={cohort_k}", one, norm="cohort-other-half",
                  cost="a search of a stored cohort per face"),
            Lever("t-norm other", one, norm="tnorm-other-half", cost="a search of a stored cohort per face"),
            Lever("scrfd landmarks", one, align="scrfd", cost="an SCRFD-500m run per frame"),
            Lever("scrfd + flip", one, align="scrfd", flip=True, cost="SCRFD per frame + a 2nd embedding per face"),
        ]
    for pair in itertools.combinations(embedders, 2):
        out += [
            Lever("fusion", pair, cost="the 2nd model's embedding per face"),
            Lever("fusion + flip", pair, flip=True, cost="2 models x 2 embeddings per face"),
            Lever("fusion + scrfd + flip", pair, align="scrfd", flip=True,
                  cost="SCRFD per frame + 2 models x 2 embeddings per face"),
        ]
    return out


# --------------------------------------------------------------------------- features


@dataclass
class Features:
    """What every image gave: whether a face was found, and per embedder its four views' unit vectors."""

    paths: list[Path]
    found: np.ndarray  # (n,) bool: YuNet found a face
    scrfd_used: np.ndarray  # (n,) bool: SCRFD's landmarks aligned the face (else the scrfd views are YuNet's)
    views: dict[str, np.ndarray] = field(default_factory=dict)  # embedder -> (n, 4, dim) float32
    index: dict[Path, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {p: i for i, p in enumerate(self.paths)}

    def vectors(self, embedder: str, align: Align, flip: bool, mirror: bool = False) -> np.ndarray:
        """(n, dim) unit vectors of every image for one embedder and alignment.

        ``flip``: ``normalise(v + v_mirror)``; ``mirror``: the mirror image's vector alone.
        """
        v = self.views[embedder]
        a = 0 if align == "yunet" else 2
        if flip:
            return l2_normalise(v[:, a] + v[:, a + 1])
        return v[:, a + 1] if mirror else v[:, a]


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def scrfd_landmarks_for(face: Any, scrfd_faces: Sequence[Any], min_iou: float = SCRFD_MIN_IOU) -> np.ndarray | None:
    """The landmarks of the SCRFD face that overlaps ``face`` most, when the overlap reaches ``min_iou``."""
    best, best_iou = None, min_iou
    for other in scrfd_faces:
        iou = _box_iou(face.box, other.box)
        if iou >= best_iou and other.landmarks is not None:
            best, best_iou = other, iou
    return None if best is None else np.asarray(best.landmarks, dtype=np.float32)


class _Embedder:
    """One embedder with the four-views interface: chips are made the way the engine makes them."""

    def __init__(self, name: str, model: Path | None, mean: float, std: float) -> None:
        self.name = name
        kind = EMBEDDERS[name][0]
        if kind == "dlib":
            from streamd.faces.dlib_engine import DlibEmbedder

            self._dlib = DlibEmbedder()
            self.fingerprint = self._dlib.fingerprint
            self.dim = self._dlib.dim
        else:
            from streamd.faces.onnx_engine import OnnxArcFaceEmbedder

            assert model is not None
            self._onnx = OnnxArcFaceEmbedder(model, mean=mean, std=std)
            self.fingerprint = self._onnx.fingerprint
            self.dim = self._onnx.dim
        self.kind = kind

    def chip(self, image: np.ndarray, face: Any) -> np.ndarray:
        """The chip the engine embeds for this face."""
        if self.kind == "dlib":
            return self._dlib.face_chips(image, [face])[0]
        from streamd.faces.align import ARCFACE_SIZE, face_chip

        return face_chip(image, face, ARCFACE_SIZE)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Unit vectors of chips (never flip-averaged: the views are combined later)."""
        if self.kind == "dlib":
            return self._dlib.embed_face_chips(chips)
        return self._onnx.embed_chips(chips)

    def views(self, image: np.ndarray, face: Any, scrfd_face: Any | None) -> np.ndarray:
        """(4, dim): the YuNet-aligned chip, its mirror, the SCRFD-aligned chip, its mirror."""
        a = self.chip(image, face)
        if scrfd_face is None:
            va = self.embed([a, mirror_chip(a)])
            return np.concatenate([va, va])
        b = self.chip(image, scrfd_face)
        return self.embed([a, mirror_chip(a), b, mirror_chip(b)])


class _Cache:
    """An .npz of per-image arrays, reused only when its key (models and settings) matches."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path, self.key = path, key
        self.rows: dict[str, dict[str, np.ndarray]] = {}
        self.dirty = False
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    if str(data["key"]) == key:
                        names = [str(n) for n in data["paths"]]
                        fields = [f for f in data.files if f not in ("key", "paths")]
                        arrays = {f: data[f] for f in fields}
                        self.rows = {n: {f: arrays[f][i] for f in fields} for i, n in enumerate(names)}
                    else:
                        click.echo(f"note: {path} was made by other models or settings; not reused", err=True)
            except (OSError, KeyError, ValueError) as exc:
                click.echo(f"note: {path} is not a readable cache ({exc}); starting afresh", err=True)

    def get(self, path: Path) -> dict[str, np.ndarray] | None:
        return self.rows.get(str(path))

    def put(self, path: Path, row: dict[str, np.ndarray]) -> None:
        self.rows[str(path)] = row
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty or not self.rows:
            return
        names = sorted(self.rows)
        fields = list(self.rows[names[0]])
        arrays = {f: np.stack([self.rows[n][f] for n in names]) for f in fields}
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, key=np.array(self.key), paths=np.array(names), **arrays)
        os.replace(tmp, self.path)
        self.dirty = False


def compute_features(
    paths: Sequence[Path],
    embedders: dict[str, _Embedder],
    yunet: Any,
    scrfd: Any,
    cache_dir: Path | None,
    det_key: str,
    max_pixels: int,
) -> Features:
    """Detect and embed every image once (cached under ``cache_dir``), with a progress bar."""
    from tqdm import tqdm

    from streamd.images import read_image
    from streamd.types import Face

    def cache_file(stem: str, key: str) -> Path | None:
        if cache_dir is None:
            return None
        import hashlib

        return cache_dir / f"levers-{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"

    det_cache = _Cache(cache_file("detect", det_key), det_key)
    emb_caches = {
        name: _Cache(cache_file(name, det_key + "|" + e.fingerprint), det_key + "|" + e.fingerprint)
        for name, e in embedders.items()
    }
    paths = [Path(p).resolve() for p in paths]
    n = len(paths)
    found = np.zeros(n, dtype=bool)
    scrfd_used = np.zeros(n, dtype=bool)
    views = {name: np.zeros((n, len(VIEWS), e.dim), dtype=np.float32) for name, e in embedders.items()}
    try:
        for i, path in enumerate(tqdm(paths, desc="detect + embed", unit="img", file=sys.stderr, disable=None,
                                      dynamic_ncols=True)):
            det = det_cache.get(path)
            rows = {name: c.get(path) for name, c in emb_caches.items()}
            if det is not None and (not det["found"] or all(r is not None for r in rows.values())):
                pass  # everything is cached
            else:
                try:
                    image = read_image(path, max_pixels=max_pixels)
                except ImageError:
                    image = None
                if det is None:
                    det = _detect_row(image, yunet, scrfd)
                    det_cache.put(path, det)
                if det["found"]:
                    face = Face(box=tuple(float(v) for v in det["box"]), score=1.0, landmarks=det["lm_yunet"])
                    other = (
                        Face(box=face.box, score=1.0, landmarks=det["lm_scrfd"]) if det["scrfd_used"] else None
                    )
                    for name, e in embedders.items():
                        if rows[name] is None:
                            assert image is not None
                            rows[name] = {"views": e.views(image, face, other)}
                            emb_caches[name].put(path, rows[name])
            found[i] = bool(det["found"])
            scrfd_used[i] = bool(det["scrfd_used"])
            if found[i]:
                for name in embedders:
                    views[name][i] = rows[name]["views"]  # type: ignore[index]
    finally:
        det_cache.save()
        for c in emb_caches.values():
            c.save()
    return Features(paths, found, scrfd_used, views)


def _detect_row(image: np.ndarray | None, yunet: Any, scrfd: Any) -> dict[str, np.ndarray]:
    """The cached detection of one image: YuNet's largest face and SCRFD's landmarks for it."""
    row = {
        "found": np.array(False), "scrfd_used": np.array(False), "box": np.zeros(4, np.float32),
        "lm_yunet": np.zeros((5, 2), np.float32), "lm_scrfd": np.zeros((5, 2), np.float32),
    }
    if image is None:
        return row
    faces = yunet.detect(image)
    if not faces:
        return row
    face = max(faces, key=lambda f: f.area)
    row["found"] = np.array(True)
    row["box"] = np.asarray(face.box, np.float32)
    row["lm_yunet"] = np.asarray(face.landmarks, np.float32)
    lm = scrfd_landmarks_for(face, scrfd.detect(image))
    if lm is not None:
        row["scrfd_used"] = np.array(True)
        row["lm_scrfd"] = lm
    return row


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class HalfData:
    """One half's split with the row of each of its images in :class:`Features`."""

    split: Split
    others: list[Path]  # one image of each person of the other half (the external cohort)


@dataclass(frozen=True)
class Scored:
    """Each probe's best label, its (normalised) score and its margin to the best other label."""

    truth: list[str | None]  # the probe's person for known probes, None for strangers
    best: list[str | None]  # None: no face
    score: np.ndarray
    gap: np.ndarray

    def named(self, threshold: float, margin: float) -> np.ndarray:
        ok = np.array([b is not None for b in self.best])
        return ok & (self.score >= threshold) & (self.gap >= margin)


def best_and_gap(sims: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per probe row of ``sims`` (probes x gallery vectors): best label, its score, its lead on the next label.

    The lead is on the nearest vector of a *different* label, or the score itself when the gallery
    has one label only: :func:`streamd.index.decision.decide` with every hit at hand.
    """
    names = sorted(set(labels))
    code = {n: i for i, n in enumerate(names)}
    lab = np.array([code[lbl] for lbl in labels])
    order = np.argsort(lab, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(lab[order]) != 0])
    per_label = np.maximum.reduceat(sims[:, order], starts, axis=1)  # probes x labels
    top = np.argmax(per_label, axis=1)
    score = per_label[np.arange(len(per_label)), top]
    if per_label.shape[1] > 1:
        second = np.partition(per_label, -2, axis=1)[:, -2]
        gap = score - second
    else:
        gap = score.copy()
    return [names[t] for t in top], score, gap


def _topk_mean(sims: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, sims.shape[1]))
    return np.mean(np.partition(sims, -k, axis=1)[:, -k:], axis=1)


def score_half(
    feats: Features, half: HalfData, lever: Lever, *, cohort_k: int = 10
) -> Scored:
    """Gallery and probes of one half under ``lever``, searched and (when asked) normalised."""
    split = half.split
    entries: list[tuple[str, str, int]] = []  # (label, kind, image row); kind: image, mirror, mean
    for name, images in split.gallery.items():
        rows = [feats.index[Path(p).resolve()] for p in images]
        rows = [r for r in rows if feats.found[r]]
        if not rows:
            continue
        if lever.gallery in ("images", "mirror", "images+mean"):
            entries += [(name, "image", r) for r in rows]
        if lever.gallery == "mirror" and not lever.flip:
            entries += [(name, "mirror", r) for r in rows]
        if lever.gallery in ("mean", "images+mean"):
            entries += [(name, "mean", r) for r in rows]
    if not entries:
        raise DatasetError("no gallery image had a face; nothing to enrol")
    probes = [(label, p) for label, p in split.known_probes] + [(None, p) for _, p in split.unknown_probes]
    probe_rows = np.array([feats.index[Path(p).resolve()] for _, p in probes])
    cohort_rows = np.array([feats.index[Path(p).resolve()] for p in half.others])
    cohort_rows = cohort_rows[feats.found[cohort_rows]] if len(cohort_rows) else cohort_rows

    labels = [e[0] for e in entries if e[1] != "mean"]
    mean_labels = sorted({e[0] for e in entries if e[1] == "mean"})
    sims = cohort = None
    for emb in lever.embedders:
        vec = feats.vectors(emb, lever.align, lever.flip)
        gal = [vec[r] if kind == "image" else feats.vectors(emb, lever.align, False, mirror=True)[r]
               for _, kind, r in entries if kind != "mean"]
        for person in mean_labels:
            rows = [r for lbl, kind, r in entries if kind == "mean" and lbl == person]
            gal.append(l2_normalise(vec[rows].mean(axis=0, keepdims=True))[0])
        s = vec[probe_rows] @ np.stack(gal).T
        c = vec[probe_rows] @ vec[cohort_rows].T if len(cohort_rows) else None
        sims = s if sims is None else sims + s
        cohort = c if cohort is None or c is None else cohort + c
    assert sims is not None
    sims = sims / len(lever.embedders)
    if cohort is not None:
        cohort = cohort / len(lever.embedders)
    gal_labels = labels + mean_labels

    best, score, gap = best_and_gap(sims, gal_labels)
    if lever.norm == "cohort-gallery":
        other = np.array(gal_labels)[None, :] != np.array(best)[:, None]
        score = score - _topk_mean(np.where(other, sims, -np.inf), cohort_k)
    elif lever.norm in ("cohort-other-half", "tnorm-other-half"):
        if cohort is None:
            raise DatasetError("the other half has no face for the cohort")
        if lever.norm == "cohort-other-half":
            score = score - _topk_mean(cohort, cohort_k)
        else:
            score = (score - cohort.mean(axis=1)) / np.maximum(cohort.std(axis=1), 1e-6)
    found = feats.found[probe_rows]
    return Scored(
        truth=[label for label, _ in probes],
        best=[b if f else None for b, f in zip(best, found)],
        score=np.where(found, score, -np.inf),
        gap=np.where(found, gap, -np.inf),
    )


def choose_threshold(scored: Scored, margin: float, max_unknown_named: float) -> float:
    """The lowest threshold at which at most ``max_unknown_named`` of the strangers' probes get a name.

    A stranger is named when its score reaches the threshold and its margin passes; with ``a``
    strangers allowed, the threshold sits just above the ``(a+1)``-th highest such score (or at
    -inf when no more than ``a`` strangers pass the margin at all).
    """
    unknown = np.array([t is None for t in scored.truth])
    n_unknown = int(unknown.sum())
    allowed = int(math.floor(max_unknown_named * n_unknown + 1e-9))
    passing = np.sort(scored.score[unknown & (scored.gap >= margin) & np.isfinite(scored.score)])[::-1]
    if len(passing) <= allowed:
        return -math.inf
    return float(np.nextafter(passing[allowed], np.inf))


@dataclass(frozen=True)
class Figures:
    """Report-half outcomes at one threshold."""

    threshold: float
    correct: int
    wrong: int
    known: int
    unknown_named: int
    unknown: int
    right: np.ndarray  # per known probe: named correctly

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "correct": self.correct, "wrong": self.wrong, "known": self.known,
            "unknown_named": self.unknown_named, "unknown": self.unknown,
            "correct_rate": self.correct / self.known if self.known else 0.0,
            "wrong_rate": self.wrong / self.known if self.known else 0.0,
            "unknown_named_rate": self.unknown_named / self.unknown if self.unknown else 0.0,
        }


def figures_at(scored: Scored, threshold: float, margin: float) -> Figures:
    """Known probes named correctly and wrongly, strangers named, at ``threshold``."""
    named = scored.named(threshold, margin)
    known = np.array([t is not None for t in scored.truth])
    right = np.array([n and b == t for n, b, t in zip(named, scored.best, scored.truth)])
    return Figures(
        threshold=threshold,
        correct=int(right[known].sum()),
        wrong=int((named & known & ~right).sum()),
        known=int(known.sum()),
        unknown_named=int((named & ~known).sum()),
        unknown=int((~known).sum()),
        right=right[known],
    )


def paired(lever: Figures, base: Figures) -> tuple[int, int, float]:
    """Known probes the lever names rightly and the baseline not, the reverse, and McNemar's exact p."""
    gain = int((lever.right & ~base.right).sum())
    loss = int((~lever.right & base.right).sum())
    n = gain + loss
    if n == 0:
        return gain, loss, 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(gain, loss) + 1)) / 2.0**n
    return gain, loss, min(1.0, 2.0 * tail)


# --------------------------------------------------------------------------- timing


def time_costs(
    feats: Features, embedders: dict[str, _Embedder], yunet: Any, scrfd: Any, n_images: int, max_pixels: int
) -> dict[str, float]:
    """Median milliseconds per face (or image) of each part a lever adds, on ``n_images`` images."""
    from streamd.images import read_image

    paths = [p for p, f in zip(feats.paths, feats.found) if f][:n_images]
    if not paths:
        return {}
    images = [read_image(p, max_pixels=max_pixels) for p in paths]
    out: dict[str, list[float]] = {"yunet per image": [], "scrfd per image": []}
    faces = []
    for image in images:
        t0 = time.perf_counter()
        found = yunet.detect(image)
        out["yunet per image"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scrfd.detect(image)
        out["scrfd per image"].append(time.perf_counter() - t0)
        faces.append(max(found, key=lambda f: f.area) if found else None)
    for name, e in embedders.items():
        chips = [e.chip(im, f) for im, f in zip(images, faces) if f is not None]
        e.embed(chips[:1])  # warm-up
        key = f"{name} embedding per face"
        out[key] = []
        for chip in chips:
            t0 = time.perf_counter()
            e.embed([chip])
            out[key].append(time.perf_counter() - t0)
    return {k: 1000.0 * statistics.median(v) for k, v in out.items() if v}


# --------------------------------------------------------------------------- command


def _model_path(name: str, given: Path | None) -> Path | None:
    kind, default, _, _ = EMBEDDERS[name]
    if kind == "dlib":
        return None
    if given is not None:
        return given
    assert default is not None
    path = Path(default) if Path(default).is_absolute() else dev_models_dir() / default
    return path


def _fmt_t(t: float) -> str:
    return f"{t:7.4f}" if math.isfinite(t) else "   -inf"


@dataclass(frozen=True)
class Study:
    """What `eval levers` and `eval tracks` both start from: embedders, detectors, halves, cache key."""

    names: list[str]
    halves: dict[str, dict[str, list[Path]]]
    embedders: dict[str, Any]
    yunet: Any
    scrfd: Any
    #: Identifies the detections in the feature caches (both commands share them).
    det_key: str
    max_pixels: int = 50_000_000


def open_study(
    root: Path, embedder_names: str, cache_dir: Path, *, foamliu_model: Path | None, mobileface_model: Path | None,
    yunet_model: Path | None, scrfd_model: Path | None,
) -> Study:
    """Check the embedder names and model files, load the detectors and embedders, split ``root`` in halves."""
    from streamd.faces.onnx_engine import ScrfdDetector, YuNetDetector

    names = [n.strip() for n in embedder_names.split(",") if n.strip()]
    unknown_names = [n for n in names if n not in EMBEDDERS]
    if unknown_names or not names:
        raise click.BadParameter(
            f"{unknown_names or embedder_names!r}: use {', '.join(EMBEDDERS)}", param_hint="--embedders"
        )
    given = {"foamliu": foamliu_model, "mobileface": mobileface_model}
    models = {n: _model_path(n, given.get(n)) for n in names}
    for n, p in models.items():
        if p is not None and not p.is_file():
            hint = " (make it: streamd models convert MODEL_DIR OUT.onnx)" if n == "mobileface" else ""
            raise StreamdError(f"{p}: model of embedder {n} not found{hint}")
    yunet_path = yunet_model or dev_models_dir() / DEV_MODEL_FILES["yunet"]
    scrfd_path = scrfd_model or dev_models_dir() / DEV_MODEL_FILES["scrfd_500m"]
    for p in (yunet_path, scrfd_path):
        if not Path(p).is_file():
            raise StreamdError(f"{p}: detector model not found (--yunet-model / --scrfd-model)")
    people = list_people(root)
    det_key = json.dumps({"yunet": file_sha256(Path(yunet_path)), "scrfd": file_sha256(Path(scrfd_path)),
                          "min_iou": SCRFD_MIN_IOU, "yunet_threshold": 0.6, "input": 640})
    cache_dir.mkdir(parents=True, exist_ok=True)
    return Study(
        names=names,
        halves={h: select_people(people, h) for h in ("tune", "report")},
        embedders={n: _Embedder(n, models[n], EMBEDDERS[n][2], EMBEDDERS[n][3]) for n in names},
        yunet=YuNetDetector(Path(yunet_path)),
        scrfd=ScrfdDetector(Path(scrfd_path)),
        det_key=det_key,
    )


def study_model_options(func: Any) -> Any:
    """The model-file options `eval levers` and `eval tracks` share (their caches are keyed by them)."""
    options = [
        click.option("--foamliu-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="foamliu MobileFaceNet .onnx (default: "
                          "../shared/models/mobilefacenet_foamliu/MobileFaceNet.onnx)."),
        click.option("--mobileface-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Paddle MobileFace converted to ONNX (default /tmp/mobileface.onnx; make it with "
                          "`streamd models convert ../shared/models/mobileface_v1.0_infer /tmp/mobileface.onnx`)."),
        click.option("--yunet-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="YuNet .onnx (default: the one in ../shared/models)."),
        click.option("--scrfd-model", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="SCRFD .onnx whose landmarks the scrfd variants align with (default: det_500m in "
                          "../shared/models); part of the feature caches' key."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("levers")
@click.option(
    "--root", type=click.Path(path_type=Path, file_okay=False), default=Path("../shared/data/faces/identities"),
    show_default=True, help="Folder of <ID>/*.jpg, split by person into a tuning and a report half.",
)
@click.option(
    "--embedders", "embedder_names", default="foamliu,mobileface", show_default=True,
    help=f"Comma-separated embedders to measure, of: {', '.join(EMBEDDERS)} (dlib is slow: ~0.1 s per chip).",
)
@study_model_options
@click.option("--enrol", type=click.IntRange(min=1), default=2, show_default=True,
              help="Images enrolled per known person.")
@click.option("--probes", type=click.IntRange(min=0), default=3, show_default=True,
              help="Probe images per person (0 = all after the enrolled ones).")
@click.option("--unknown-share", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2, show_default=True,
              help="Share of each half's people never enrolled.")
@click.option("--seeds", default="0", show_default=True,
              help="Seeds of the choice of strangers: one (the table) or several, e.g. 0-9 (mean and spread).")
@click.option("--margin", type=click.FloatRange(min=0.0), default=0.02, show_default=True,
              help="Lead of the best label over the next one needed to name it (index.margin).")
@click.option("--max-unknown-named", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="Share of the tuning half's strangers' probes allowed a name when the threshold is chosen.")
@click.option("--cohort-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Top-k cosines averaged by the cohort normalisations.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("/tmp/streamd-levers"),
              show_default=True, help="Where detections and features are cached (.npz, keyed by the models).")
@click.option("--timing-images", type=click.IntRange(min=0), default=40, show_default=True,
              help="Images to time each part on (0 = no timing).")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON.")
def command(root: Path, embedder_names: str, foamliu_model: Path | None, mobileface_model: Path | None,
            yunet_model: Path | None, scrfd_model: Path | None, enrol: int, probes: int, unknown_share: float,
            seeds: str, margin: float, max_unknown_named: float, cohort_k: int, cache_dir: Path,
            timing_images: int, json_file: Path | None) -> None:
    """Accuracy levers (flip, mirrored gallery, person means, cohort norms, fusion, SCRFD landmarks).

    Thresholds are chosen on the tuning half (at most --max-unknown-named of strangers named);
    figures are the report half's at that threshold, with the known probes each lever gains and
    loses against its embedder's baseline (McNemar's exact p).
    """

    study = open_study(root, embedder_names, cache_dir, foamliu_model=foamliu_model,
                       mobileface_model=mobileface_model, yunet_model=yunet_model, scrfd_model=scrfd_model)
    names, halves, embedders = study.names, study.halves, study.embedders
    yunet, scrfd, det_key, max_pixels = study.yunet, study.scrfd, study.det_key, study.max_pixels
    seed_list = _parse_seeds(seeds)

    splits = {
        (h, s): split_people(halves[h], enrol=enrol, probes=probes, unknown_share=unknown_share, seed=s)
        for h in halves for s in seed_list
    }
    others = {h: [imgs[0] for imgs in halves["report" if h == "tune" else "tune"].values()] for h in halves}
    needed: dict[Path, None] = {}
    for split in splits.values():
        for imgs in split.gallery.values():
            needed.update(dict.fromkeys(imgs))
        needed.update(dict.fromkeys(p for _, p in split.known_probes + split.unknown_probes))
    for imgs in others.values():
        needed.update(dict.fromkeys(imgs))
    feats = compute_features(list(needed), embedders, yunet, scrfd, cache_dir, det_key, max_pixels)

    levers = default_levers(names, cohort_k)
    # (lever name, label, seed) -> (tune, report at the tuned threshold, report at its own threshold)
    results: dict[tuple[str, str, int], tuple[Figures, Figures, Figures]] = {}
    for seed in seed_list:
        data = {h: HalfData(splits[(h, seed)], others[h]) for h in halves}
        for lever in levers:
            tune = score_half(feats, data["tune"], lever, cohort_k=cohort_k)
            t = choose_threshold(tune, margin, max_unknown_named)
            report = score_half(feats, data["report"], lever, cohort_k=cohort_k)
            own = choose_threshold(report, margin, max_unknown_named)
            results[(lever.name, lever.label, seed)] = (
                figures_at(tune, t, margin), figures_at(report, t, margin), figures_at(report, own, margin)
            )

    costs = time_costs(feats, embedders, yunet, scrfd, timing_images, max_pixels) if timing_images else {}
    _print_report(root, halves, splits, feats, levers, results, seed_list, margin, max_unknown_named, costs)
    write_json(json_file, {
        "root": str(root), "embedders": {n: e.fingerprint for n, e in embedders.items()},
        "enrol": enrol, "probes": probes, "unknown_share": unknown_share, "margin": margin,
        "max_unknown_named": max_unknown_named, "cohort_k": cohort_k, "seeds": seed_list,
        "images": len(feats.paths), "images_without_face": int((~feats.found).sum()),
        "scrfd_landmarks_used": int(feats.scrfd_used.sum()),
        "costs_ms": costs,
        "results": [
            {"lever": lv.name, "embedders": list(lv.embedders), "align": lv.align, "flip": lv.flip,
             "gallery": lv.gallery, "norm": lv.norm, "cost": lv.cost, "seed": s,
             "tune": results[(lv.name, lv.label, s)][0].to_dict(),
             "report": results[(lv.name, lv.label, s)][1].to_dict(),
             "report_own_threshold": results[(lv.name, lv.label, s)][2].to_dict()}
            for s in seed_list for lv in levers
        ],
    })


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    """``mean +- sd`` of percentages (sd 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}5.2f} +- {sd:4.2f}"


def _parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 0 or 0-9 or 0,3,5", param_hint="--seeds") from None
    if not out:
        raise click.BadParameter("no seed given", param_hint="--seeds")
    return sorted(set(out))


def _reference(
    lever: Lever, seed: int, results: dict[tuple[str, str, int], tuple[Figures, Figures, Figures]], own: bool = False
) -> Figures:
    """The baseline a lever is compared with: its embedder's, or for fusion the best single one's."""
    bases = [results[("baseline", e, seed)][2 if own else 1] for e in lever.embedders]
    return max(bases, key=lambda f: f.correct)


def _print_report(root: Path, halves: dict[str, Any], splits: dict[tuple[str, int], Split], feats: Features,
                  levers: list[Lever], results: dict[tuple[str, str, int], tuple[Figures, Figures, Figures]],
                  seeds: list[int], margin: float, max_unknown_named: float, costs: dict[str, float]) -> None:
    s0 = seeds[0]
    click.echo(f"Accuracy levers on {root}: tuning half {len(halves['tune'])} people, report half "
               f"{len(halves['report'])} people (streamd.eval.split)")
    for h in ("tune", "report"):
        sp = splits[(h, s0)]
        click.echo(f"  {h:6}: {len(sp.gallery)} enrolled, {len(sp.unknown_people)} strangers; "
                   f"{len(sp.known_probes)} known probes, {len(sp.unknown_probes)} strangers' probes (seed {s0})")
    click.echo(f"images: {len(feats.paths)}, {int((~feats.found).sum())} without a face (YuNet); SCRFD landmarks "
               f"for {int(feats.scrfd_used.sum())} of {int(feats.found.sum())} faces")
    click.echo(f"threshold: lowest with <= {100 * max_unknown_named:g} % of the tuning half's strangers named; "
               f"decision: nearest vector per label, margin {margin:g}")
    click.echo("")
    click.echo(f"Report half, seed {s0}, at the threshold chosen on the tuning half. gain/loss: known probes named "
               "rightly by the lever and not by the baseline, and the reverse; p: McNemar exact. own t, right: the "
               "report half's own threshold by the same rule, and the known probes named rightly there")
    header = (f"  {'embedder':<22} {'lever':<22} {'threshold':>9} | {'named right':>11} | {'wrong':>7} | "
              f"{'strangers named':>15} | {'gain/loss':>9} {'p':>6} | {'own t':>7} {'right':>7} | cost")
    click.echo(header)
    click.echo("  " + "-" * (len(header) + 30))
    last = None
    for lever in levers:
        tune, rep, own = results[(lever.name, lever.label, s0)]
        if last is not None and lever.label != last:
            click.echo("")
        last = lever.label
        base = _reference(lever, s0, results)
        gain, loss, p = paired(rep, base)
        gl = "" if lever.name == "baseline" else f"+{gain}/-{loss}"
        ps = "" if lever.name == "baseline" else f"{p:.3f}"
        click.echo(
            f"  {lever.label:<22} {lever.name:<22} {_fmt_t(tune.threshold):>9} | {pct(rep.correct, rep.known):>11} | "
            f"{pct(rep.wrong, rep.known):>7} | {pct(rep.unknown_named, rep.unknown):>8} ({rep.unknown_named:>2}/"
            f"{rep.unknown:<3}) | {gl:>9} {ps:>6} | {_fmt_t(own.threshold)} {pct(own.correct, own.known)} | "
            f"{lever.cost}"
        )
    if len(seeds) > 1:
        click.echo("")
        click.echo(f"Over seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} choices of strangers; threshold re-chosen on "
                   "each tuning half): mean +- sd on the report half; delta = lever - baseline, per seed")
        header = (f"  {'embedder':<22} {'lever':<22} | {'named right':>14} | {'strangers named':>15} | "
                  f"{'delta named right':>17} | {'seeds better/worse':>18} | {'own t: right':>14} | {'delta':>13}")
        click.echo(header)
        click.echo("  " + "-" * len(header))
        last = None
        for lever in levers:
            reps = [results[(lever.name, lever.label, s)][1] for s in seeds]
            bases = [_reference(lever, s, results) for s in seeds]
            right = [100.0 * r.correct / r.known for r in reps]
            fa = [100.0 * r.unknown_named / r.unknown for r in reps]
            delta = [100.0 * (r.correct - b.correct) / r.known for r, b in zip(reps, bases)]
            owns = [results[(lever.name, lever.label, s)][2] for s in seeds]
            own_bases = [_reference(lever, s, results, own=True) for s in seeds]
            own_right = [100.0 * r.correct / r.known for r in owns]
            own_delta = [100.0 * (r.correct - b.correct) / r.known for r, b in zip(owns, own_bases)]
            if last is not None and lever.label != last:
                click.echo("")
            last = lever.label
            better = sum(d > 0 for d in delta)
            worse = sum(d < 0 for d in delta)
            dl = "" if lever.name == "baseline" else f"{statistics.mean(delta):+5.2f} +- {statistics.stdev(delta):4.2f}"
            bw = "" if lever.name == "baseline" else f"{better}/{worse}"
            click.echo(
                f"  {lever.label:<22} {lever.name:<22} | "
                f"{statistics.mean(right):6.2f} +- {statistics.stdev(right):4.2f} | "
                f"{statistics.mean(fa):6.2f} +- {statistics.stdev(fa):4.2f} | {dl:>17} | {bw:>18} | "
                f"{statistics.mean(own_right):6.2f} +- {statistics.stdev(own_right):4.2f} | "
                f"{_mean_sd(own_delta, signed=True) if lever.name != 'baseline' else '':>13}"
            )
    if costs:
        click.echo("")
        click.echo("CPU cost (median ms, one thread, on this machine):")
        for k, v in costs.items():
            click.echo(f"  {k:<32} {v:7.2f} ms")

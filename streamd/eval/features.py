"""What ``eval pairs`` and ``eval ident`` share: engine options, one feature per image, reports.

Each image's feature (its largest face) is computed once per run; ``--cache FILE`` keeps them in
an ``.npz`` between runs, keyed by the engine (detector settings, embedder fingerprint, gate), so
trying other thresholds or margins does not re-run the models.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import click
import numpy as np
from pydantic import ValidationError

from streamd.errors import ConfigError, ImageError, StreamdError
from streamd.faces.modelfile import find_dev_model
from streamd.settings import EngineSettings, Settings, load_settings


class DatasetError(StreamdError):
    """An evaluation list or folder is malformed or points at missing files."""


# --------------------------------------------------------------------------- settings and options


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every eval command takes: config, engine overrides, threshold, gate, cache, json."""
    options = [
        click.option(
            "--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None,
            help="streamd settings file (its engine and index sections are used).",
        ),
        click.option("--detector", type=click.Choice(["dlib", "onnx"]), default=None, help="Override engine.detector.type."),
        click.option(
            "--det-model", type=click.Choice(["yunet", "scrfd", "hog", "cnn"]), default=None,
            help="Override engine.detector.model (yunet/scrfd for onnx, hog/cnn for dlib).",
        ),
        click.option("--det-model-path", type=click.Path(path_type=Path), default=None, help="Override engine.detector.model_path."),
        click.option("--embedder", type=click.Choice(["dlib", "onnx"]), default=None, help="Override engine.embedder.type."),
        click.option("--emb-model-path", type=click.Path(path_type=Path), default=None, help="Override engine.embedder.model_path."),
        click.option(
            "--threshold", type=float, default=None,
            help="Cosine threshold to report at (default: index.rec_threshold, else the embedder's calibrated default).",
        ),
        click.option(
            "--gate/--no-gate", default=False, show_default=True,
            help="Apply the quality gate; a rejected face then counts as no face.",
        ),
        click.option(
            "--cache", "cache_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
            help="Keep features in this .npz between runs (reused only by the same engine).",
        ),
        click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write the results as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def eval_settings(
    config: Path | None,
    *,
    detector: str | None = None,
    det_model: str | None = None,
    det_model_path: Path | None = None,
    embedder: str | None = None,
    emb_model_path: Path | None = None,
    threshold: float | None = None,
) -> Settings:
    """Settings from ``config`` (and STREAMD_* variables) with the command-line overrides applied.

    Switching a ``type`` starts that section from its defaults. An ONNX model path that is neither
    given nor present falls back to the development models in ``../shared/models`` when present.
    """
    settings = load_settings(config)
    eng = settings.engine.model_dump()
    if detector and detector != eng["detector"]["type"]:
        eng["detector"] = {"type": detector}
    if det_model:
        eng["detector"]["model"] = det_model
    if det_model_path:
        eng["detector"]["model_path"] = det_model_path
    if embedder and embedder != eng["embedder"]["type"]:
        eng["embedder"] = {"type": embedder}
    if emb_model_path:
        eng["embedder"]["model_path"] = emb_model_path
    try:
        engine = EngineSettings.model_validate(eng)
    except ValidationError as err:
        problems = "; ".join(f"engine.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"command-line engine options: {problems}") from None
    _use_dev_models(engine, det_model_path, emb_model_path)
    settings.engine = engine
    if threshold is not None:
        settings.index.rec_threshold = threshold
    return settings


def _use_dev_models(engine: EngineSettings, det_path: Path | None, emb_path: Path | None) -> None:
    det, emb = engine.detector, engine.embedder
    if det.type == "onnx" and det_path is None and not Path(det.model_path).exists():
        found = find_dev_model(det.model)
        if found:
            det.model_path = found
    if emb.type == "onnx" and emb_path is None and not Path(emb.model_path).exists():
        found = find_dev_model("mobilefacenet")
        if found:
            emb.model_path = found


def engine_key(engine: EngineSettings, fingerprint: str, gate: bool) -> str:
    """Identifies everything that changes an image's feature (for the on-disk cache)."""
    det = engine.detector.model_dump(mode="json")
    det.pop("threads", None)
    quality = engine.quality.model_dump(mode="json") if gate else None
    return json.dumps({"detector": det, "embedder": fingerprint, "gate": quality}, sort_keys=True)


def describe_engine(engine: Any) -> str:
    """One line naming the detector and embedder in use."""
    det = engine.detector
    det_name = getattr(det, "name", type(det).__name__)
    path = getattr(det, "model_path", None)
    det_desc = f"{det_name} ({Path(path).name})" if path else det_name
    emb = engine.embedder
    emb_path = getattr(emb, "model_path", None)
    emb_desc = f"{emb.name} ({Path(emb_path).name})" if emb_path else emb.name
    return f"{det_desc} + {emb_desc}, {engine.dim}-d"


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class ImageFeature:
    """The feature of an image's largest face, or why there is none (``no_face``, a gate reason, ``unreadable``)."""

    vector: np.ndarray | None
    status: str  # "ok", "no_face", "rejected:<reason>", "unreadable"


class FeatureStore:
    """Computes each image's feature once (largest face), optionally persisted in an .npz file."""

    def __init__(
        self,
        engine: Any,
        *,
        key: str,
        apply_gate: bool = False,
        cache_file: Path | None = None,
        max_pixels: int = 50_000_000,
    ) -> None:
        self.engine = engine
        self.key = key
        self.apply_gate = apply_gate
        self.cache_file = cache_file
        self.max_pixels = max_pixels
        self._features: dict[str, ImageFeature] = {}
        self._dirty = False
        if cache_file is not None and cache_file.exists():
            self._load(cache_file)

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self.key:
                    click.echo(f"note: {path} was made by another engine configuration; not reused", err=True)
                    return
                for name, vec, status in zip(data["paths"], data["vectors"], data["statuses"]):
                    self._features[str(name)] = ImageFeature(None if status != "ok" else vec.astype(np.float32), str(status))
        except (OSError, KeyError, ValueError) as exc:
            click.echo(f"note: {path} is not a readable feature cache ({exc}); starting afresh", err=True)

    def save(self) -> None:
        """Write the cache file (atomically) when features were added."""
        if self.cache_file is None or not self._dirty or not self._features:
            return
        names = sorted(self._features)
        dim = self.engine.dim
        vectors = np.zeros((len(names), dim), dtype=np.float32)
        for i, name in enumerate(names):
            if self._features[name].vector is not None:
                vectors[i] = self._features[name].vector
        statuses = np.array([self._features[n].status for n in names])
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp.npz")
        np.savez(tmp, key=np.array(self.key), paths=np.array(names), vectors=vectors, statuses=statuses)
        os.replace(tmp, self.cache_file)
        self._dirty = False

    def get(self, path: Path) -> ImageFeature:
        """The feature of one image, computed on first use."""
        name = str(Path(path).resolve())
        feature = self._features.get(name)
        if feature is None:
            feature = self._compute(Path(path))
            self._features[name] = feature
            self._dirty = True
        return feature

    def _compute(self, path: Path) -> ImageFeature:
        from streamd.images import read_image

        try:
            image = read_image(path, max_pixels=self.max_pixels)
        except ImageError:
            return ImageFeature(None, "unreadable")
        results = self.engine.analyze(image, largest_only=True, apply_gate=self.apply_gate)
        if not results:
            return ImageFeature(None, "no_face")
        if results[0].rejected:
            return ImageFeature(None, f"rejected:{results[0].rejected}")
        return ImageFeature(results[0].vector, "ok")

    def compute_all(self, paths: Iterable[Path], desc: str) -> dict[Path, ImageFeature]:
        """Features of many images with a progress bar; saves the cache at the end (also on Ctrl-C)."""
        from tqdm import tqdm

        unique = list(dict.fromkeys(Path(p) for p in paths))
        out: dict[Path, ImageFeature] = {}
        try:
            for path in tqdm(unique, desc=desc, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True):
                out[path] = self.get(path)
        finally:
            self.save()
        return out


def open_features(settings: Settings, *, gate: bool, cache_file: Path | None) -> tuple[Any, FeatureStore]:
    """The FaceEngine the settings describe (heavy imports happen here) and a store of its features."""
    from streamd.faces.engine import FaceEngine

    engine = FaceEngine.from_settings(settings.engine)
    store = FeatureStore(
        engine,
        key=engine_key(settings.engine, engine.fingerprint, gate),
        apply_gate=gate,
        cache_file=cache_file,
        max_pixels=settings.engine.max_image_pixels,
    )
    return engine, store


def configured_threshold(settings: Settings, engine: Any) -> float:
    """index.rec_threshold when set, else the embedder's calibrated default."""
    t = settings.index.rec_threshold
    return float(t) if t is not None else float(engine.default_threshold)


# --------------------------------------------------------------------------- output


def pct(part: int | float, whole: int | float) -> str:
    """``part/whole`` as a percentage with one decimal, or ``-`` when whole is 0."""
    return f"{100.0 * part / whole:5.1f} %" if whole else "    - "


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write results as indented JSON when ``--json`` was given."""
    if path is None:
        return
    try:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StreamdError(f"{path}: cannot write JSON results ({exc.strerror})") from None
    click.echo(f"results written to {path}")

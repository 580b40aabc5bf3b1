"""A PaddleX ``face_recognition`` pipeline config used as streamd's recognition settings.

PaddleX users describe face recognition in one YAML file (PaddleX's own default is
``paddlex/configs/pipelines/face_recognition.yaml``; streamd ships the same as
``configs/face_recognition.yaml``)::

    pipeline_name: face_recognition
    index: None                     # a feature library folder (vector.index + id_map.yaml)
    det_threshold: 0.6
    rec_threshold: 0.4
    rec_topk: 5
    device: cpu                     # optional, as PaddleX's --device
    SubModules:
      Detection:   {module_name: face_detection, model_name: PP-YOLOE_plus-S_face, model_dir: null, batch_size: 1}
      Recognition: {module_name: face_feature,   model_name: ResNet50_face,        model_dir: null, batch_size: 1}

It maps onto streamd's settings as: Detection -> ``engine.detector`` (type ``paddlex``),
Recognition -> ``engine.embedder`` (type ``paddlex``), ``det_threshold`` -> the detector's,
``device`` -> ``engine.device``, ``index`` -> ``index.dir``, ``rec_threshold`` / ``rec_topk`` ->
``index.*``. PaddleX's ``engine_config`` (top level or per sub-module) is understood for the keys
streamd uses: ``run_mode`` (paddle / mkldnn), ``cpu_threads``, ``enable_new_ir``, ``delete_pass``.
As PaddleX does, string values are read as Python literals (``None`` is null). Relative paths are
taken relative to the pipeline file's folder. Any other key fails, naming its path.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamd.errors import ConfigError
from streamd.settings import EngineSettings, IndexSettings, Settings, format_validation_errors, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaddleEngineConfig(_Strict):
    """The part of PaddleX's ``engine_config`` (Paddle Inference options) that streamd maps."""

    run_mode: Literal["paddle", "mkldnn"] | None = Field(
        None, description="mkldnn = oneDNN kernels on CPU (streamd's mkldnn: true); paddle = plain kernels."
    )
    cpu_threads: int | None = Field(None, ge=1, description="CPU math threads (streamd's threads).")
    enable_new_ir: bool | None = Field(None, description="Paddle's new IR (streamd's new_ir).")
    delete_pass: list[str] | None = Field(None, description="Graph passes to skip (streamd's delete_passes).")

    def to_streamd(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.run_mode is not None:
            out["mkldnn"] = self.run_mode == "mkldnn"
        if self.cpu_threads is not None:
            out["threads"] = self.cpu_threads
        if self.enable_new_ir is not None:
            out["new_ir"] = self.enable_new_ir
        if self.delete_pass is not None:
            out["delete_passes"] = self.delete_pass
        return out


class SubModule(_Strict):
    """One of ``SubModules.Detection`` / ``SubModules.Recognition``."""

    module_name: str
    model_name: str
    model_dir: Path | None = None
    batch_size: int = Field(1, ge=1)
    engine_config: PaddleEngineConfig | None = None


class SubModules(_Strict):
    Detection: SubModule
    Recognition: SubModule


class FaceRecognitionPipeline(_Strict):
    """PaddleX's face_recognition pipeline config; defaults are those of PaddleX's code."""

    pipeline_name: Literal["face_recognition"]
    index: Path | None = None
    det_threshold: float = Field(0.5, ge=0.0, le=1.0)
    rec_threshold: float = 0.5
    rec_topk: int = Field(5, ge=1, le=100)
    device: str | None = None
    use_hpip: Literal[False] = False
    engine_config: PaddleEngineConfig | None = None
    SubModules: SubModules

    def check_modules(self, source: str) -> None:
        """Detection must be a face_detection module and Recognition a face_feature one."""
        for key, expected in (("Detection", "face_detection"), ("Recognition", "face_feature")):
            got = getattr(self.SubModules, key).module_name
            if got != expected:
                raise ConfigError(f"{source}: SubModules.{key}.module_name: must be {expected}, got {got!r}")


def _literals(value: Any) -> Any:
    """Strings read as Python literals where they are one (PaddleX's create_attr_dict does this)."""
    if isinstance(value, dict):
        return {k: _literals(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


def read_pipeline(path: Path | str) -> FaceRecognitionPipeline:
    """Parse and validate a pipeline file; ConfigError lines name the file and the key path."""
    path = Path(path)
    data = _literals(read_yaml(path))
    try:
        pipeline = FaceRecognitionPipeline.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_errors(err, str(path))) from None
    pipeline.check_modules(str(path))
    return pipeline


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(value).expanduser()
    return value if value.is_absolute() else base / value


def pipeline_sections(path: Path | str) -> dict[str, Any]:
    """The ``engine`` and ``index`` settings (as plain dicts) a pipeline file describes."""
    path = Path(path)
    pipe = read_pipeline(path)
    folder = path.parent
    shared = pipe.engine_config.to_streamd() if pipe.engine_config else {}

    def module(sub: SubModule) -> dict[str, Any]:
        own = sub.engine_config.to_streamd() if sub.engine_config else {}
        return {
            "type": "paddlex",
            "model_name": sub.model_name,
            "model_dir": _resolve(folder, sub.model_dir),
            "batch_size": sub.batch_size,
            **shared,
            **own,
        }

    detector = {**module(pipe.SubModules.Detection), "det_threshold": pipe.det_threshold}
    engine: dict[str, Any] = {"detector": detector, "embedder": module(pipe.SubModules.Recognition)}
    if pipe.device is not None:
        engine["device"] = pipe.device
    index: dict[str, Any] = {"rec_threshold": pipe.rec_threshold, "rec_topk": pipe.rec_topk}
    if pipe.index is not None:
        index["dir"] = _resolve(folder, pipe.index)
    return {"engine": engine, "index": index}


def settings_from_pipeline(path: Path | str, base: Settings, *, keep_index: Iterable[str] = ()) -> Settings:
    """``base`` with its detector, embedder, device and index search settings from the pipeline file.

    ``keep_index`` names ``index`` keys that ``base`` set explicitly and that therefore win over
    the pipeline file (``load_settings`` passes the keys of the daemon config's ``index:`` section).
    Other sections of ``base`` (cameras, MQTT, quality gate, ...) are kept.
    """
    sections = pipeline_sections(path)
    engine = base.engine.model_dump()
    engine.update(sections["engine"])
    engine["pipeline"] = Path(path)
    index = base.index.model_dump()
    keep = set(keep_index)
    index.update({k: v for k, v in sections["index"].items() if k not in keep})
    try:
        new_engine = EngineSettings.model_validate(engine)
        new_index = IndexSettings.model_validate(index)
    except ValidationError as err:
        raise ConfigError(format_validation_errors(err, str(path))) from None
    return base.model_copy(update={"engine": new_engine, "index": new_index})

"""streamd's settings: one YAML file plus ``STREAMD_`` environment overrides.

Nested keys are joined with ``__`` in the environment, e.g.
``STREAMD_ENGINE__DETECTOR__TYPE=onnx`` or ``STREAMD_INDEX__REC_THRESHOLD=0.5``.
Environment values win over the file. Every model forbids unknown keys so a typo fails
naming its path instead of being ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamd.errors import ConfigError
from streamd.faces.calibration import ONNX_SAME_PERSON_THRESHOLD, PADDLE_SAME_PERSON_THRESHOLD
from streamd.logging_setup import LogSettings
from streamd.pipeline.config import PipelineSettings
from streamd.server.config import HttpSettings
from streamd.sinks.config import MqttSettings
from streamd.sources.config import CameraSettings, check_unique_names
from streamd.snapshots import SnapshotSettings
from streamd.tracking.config import TrackingSettings


class StrictModel(BaseModel):
    """Base for every settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- detectors


class DlibDetectorSettings(StrictModel):
    """dlib's detectors with its 5-point shape predictor (extra ``dlib``). Weights: dlib's models from the
    ``face_recognition_models`` package (CC0), so the default engine works offline."""

    type: Literal["dlib"] = "dlib"
    model: Literal["hog", "cnn"] = Field(
        "hog",
        description="hog is fast on CPU and misses small or turned faces; cnn (mmod) finds more "
        "faces but costs about 10x more time on CPU.",
    )
    upsample: int = Field(
        0,
        ge=0,
        le=3,
        description="Times the image is upsampled before detection. Each step finds faces half "
        "as large but costs about 4x the time.",
    )
    det_threshold: float = Field(
        0.0,
        description="Minimum detector score. HOG scores are SVM margins (0 = dlib's default); "
        "raising it removes false faces but misses faint ones.",
    )
    max_side: int = Field(
        0,
        ge=0,
        description="Downscale images whose longer side exceeds this before detection (0 = never). "
        "Lower is faster, but faces under ~40 px at the scaled size are lost.",
    )
    retry_upsample_below: int = Field(
        400,
        ge=0,
        description="When no face is found in an image whose longer side is under this many pixels, "
        "detect once more with one more upsample step (0 = never). Finds the small faces of stills "
        "and gallery photos; costs one more pass only on such images without a face.",
    )


class OnnxDetectorSettings(StrictModel):
    """YuNet (through onnxruntime or ``cv2.FaceDetectorYN``) or SCRFD (through onnxruntime) with 5 landmarks.
    Weights: YuNet is MIT (``streamd models fetch onnx``); SCRFD's are for non-commercial research only."""

    type: Literal["onnx"] = "onnx"
    model: Literal["yunet", "scrfd"] = Field(
        "yunet", description="yunet is the fastest; scrfd (500m/2.5g) is more accurate on small faces."
    )
    model_path: Path = Field(
        Path("/var/lib/streamd/models/face_detection_yunet_2023mar.onnx"),
        description="The .onnx file of the detector.",
    )
    det_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="Minimum face score. Higher means fewer false faces but more misses."
    )
    nms_threshold: float = Field(0.3, ge=0.0, le=1.0, description="IoU above which overlapping boxes merge.")
    input_size: int = Field(
        640,
        ge=64,
        description="Longer side the frame is scaled to for detection (SCRFD only shrinks larger frames, "
        "never enlarges, and pads to a multiple of 32). "
        "Smaller is faster but loses small faces.",
    )
    threads: int = Field(1, ge=0, description="Intra-op threads (0 = library default).")
    yunet_backend: Literal["auto", "onnxruntime", "opencv"] = Field(
        "auto",
        description="What runs YuNet: onnxruntime (2.3-2.8x faster on a CPU than OpenCV's DNN module; the same "
        "faces, boxes and landmarks), opencv (cv2.FaceDetectorYN) or auto (onnxruntime when it and the onnx "
        "package are installed, as the onnx extra does).",
    )


class PaddleRuntimeSettings(StrictModel):
    """How Paddle Inference runs a model on CPU (shared by the ``paddlex`` and ``paddle`` engines)."""

    mkldnn: bool = Field(
        True,
        description="oneDNN (MKLDNN) kernels on x86 CPUs: usually faster, but a few legacy models give "
        "slightly different boxes with it; off = Paddle's plain CPU kernels.",
    )
    threads: int = Field(
        1, ge=1, description="CPU math threads per model. More threads cut latency of one call but "
        "compete with the other cameras' work on small machines."
    )
    new_ir: bool | None = Field(
        None,
        description="Paddle's new IR (PIR). Unset = automatic: off for legacy programs "
        "(inference.pdmodel, which Paddle 3 runs only with the old IR), Paddle's default for "
        "PaddleX 3 exports (inference.json).",
    )
    delete_passes: list[str] | None = Field(
        None,
        description="Paddle Inference graph passes to skip. Unset = automatic: with oneDNN on a legacy "
        "program, conv_activation_onednn_fuse_pass is skipped (it corrupts BlazeFace-FPN-SSH's scores); "
        "else none.",
    )


class PaddleBoxDetectorSettings(PaddleRuntimeSettings):
    """What the Paddle face detectors share: they give boxes only (no landmarks)."""

    det_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="Minimum face score. Higher means fewer false faces but more misses."
    )
    pad_small: bool = Field(
        True,
        description="Images smaller than the model's input (640x640 for BlazeFace) are padded to it with "
        "black instead of enlarged. BlazeFace-style detectors, trained on crowd photos, miss a face "
        "that fills an enlarged portrait; camera frames are larger and unaffected.",
    )
    landmarks: Literal["none", "yunet"] = Field(
        "none",
        description="none: faces are cut from the box for the embedder (MobileFace on LFW: 90.4 %). "
        "yunet: YuNet looks at each box for five landmarks and the face is aligned (98.7 %), a few "
        "ms more per face; a face YuNet does not confirm is still cut from its box.",
    )
    landmarks_model: Path = Field(
        Path("/var/lib/streamd/models/face_detection_yunet_2023mar.onnx"),
        description="The YuNet .onnx file used when landmarks is yunet.",
    )


class PaddlexDetectorSettings(PaddleBoxDetectorSettings):
    """A PaddleX face_detection model through ``paddlex.create_model`` (extra ``paddle``, or ``paddle-gpu``).

    Its exports give boxes only: faces are cut from the box, or aligned with YuNet's landmarks.
    """

    type: Literal["paddlex"] = "paddlex"
    model_name: str = Field(
        "BlazeFace-FPN-SSH",
        description="PaddleX model name: BlazeFace, BlazeFace-FPN-SSH, PicoDet_LCNet_x2_5_face or "
        "PP-YOLOE_plus-S_face (slower, more accurate on small and turned faces).",
    )
    model_dir: Path | None = Field(
        None,
        description="Folder of the export (inference.json or inference.pdmodel, inference.pdiparams, "
        "inference.yml). Unset = PaddleX downloads its official model, which needs its model hoster: "
        "offline this fails at once asking for a local model_dir.",
    )
    batch_size: int = Field(1, ge=1, description="Images per model call (PaddleX batch_size).")

    @field_validator("model_name")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        from streamd.faces.paddle_models import check_model_name

        return check_model_name("face_detection", value)


class PaddleDetectorSettings(PaddleBoxDetectorSettings):
    """A Paddle static-graph face detector run by Paddle Inference directly, without PaddleX.

    For exports PaddleX 3 does not describe, e.g. PaddleDetection's BlazeFace-FPN-SSH with its
    ``infer_cfg.yml`` (inputs image, im_shape, scale_factor; output rows class, score, x1, y1, x2, y2).
    """

    type: Literal["paddle"] = "paddle"
    model_dir: Path = Field(
        Path("/var/lib/streamd/models/blazeface_fpn_ssh_1000e_v1.0_infer"),
        description="Folder with inference.pdmodel (or .json), inference.pdiparams and infer_cfg.yml "
        "(or inference.yml) giving the resize and normalisation.",
    )


DetectorSettings = Annotated[
    Union[DlibDetectorSettings, OnnxDetectorSettings, PaddlexDetectorSettings, PaddleDetectorSettings], Field(discriminator="type")
]


# --------------------------------------------------------------------------- embedders


def same_person_field(default: float) -> Any:
    """The ``same_person_threshold`` setting of an embedder whose calibrated gate is ``default``."""
    return Field(
        default,
        ge=-1.0,
        le=1.0,
        description="The tracker's same-person gate for this model (tracking.min_similarity unset): the cosine "
        "similarity that photos of different people reach at most 0.1 % of the time (`streamd eval gate`). "
        "Calibrate it again for another model.",
    )


class DlibEmbedderSettings(StrictModel):
    """dlib's 128-d ResNet (``face_recognition_models``, CC0), aligned with 5 landmarks: the offline default.
    The onnx embedder is more accurate and far cheaper (docs/accuracy.md; ``streamd models fetch onnx``)."""

    type: Literal["dlib"] = "dlib"
    num_jitters: int = Field(
        1, ge=1, le=100, description="Re-sample each face this many times; N jitters cost N times more, gain ~0.1 %."
    )
    flip: bool = Field(
        False,
        description="Embed the face and its mirror image, sum the two vectors and normalise (flip-averaged "
        "features). Costs a second embedding per face; an index built with it and one built without it do not "
        "mix (the engine fingerprint differs).",
    )


class OnnxEmbedderSettings(StrictModel):
    """Any ArcFace-style 112x112 recogniser ([N,3,112,112] -> [N,D]) through onnxruntime. Weights are yours to
    choose: foamliu's MobileFaceNet (``streamd models fetch onnx``) is Apache-2.0 but trained on MS-Celeb-1M,
    whose terms are research-only; the insightface/PaddlePaddle MobileFace is for non-commercial research."""

    type: Literal["onnx"] = "onnx"
    model_path: Path = Field(
        Path("/var/lib/streamd/models/MobileFaceNet.onnx"), description="The .onnx file of the recogniser."
    )
    mean: float = Field(127.5, description="Subtracted from each pixel (0-255) before the model.")
    std: float = Field(128.0, gt=0, description="Pixels are divided by this after the mean is subtracted.")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order the model was trained on.")
    flip: bool = Field(
        False,
        description="Embed the face and its mirror image, sum the two vectors and normalise (flip-averaged "
        "features). Costs a second embedding per face; an index built with it and one built without it do not "
        "mix (the engine fingerprint differs).",
    )
    default_threshold: float = Field(
        0.45,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity this model is calibrated for; used when index.rec_threshold is unset. "
        "0.45 suits MobileFaceNet (LFW pairs: no false accepts; open-set with 2 images per person: "
        "about 96 % of known faces named, under 2 % of strangers named). Lower names more people "
        "but also more strangers.",
    )
    same_person_threshold: float = same_person_field(ONNX_SAME_PERSON_THRESHOLD)
    threads: int = Field(1, ge=0, description="Intra-op threads (0 = library default).")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Faces run through the model together. Unset = 1 on the CPU (batches are no faster "
        "per face there and hold more memory: MobileFaceNet, 16 faces at once, 3.6 ms per face and 170 MiB "
        "more against 2.9 ms one by one) and 16 on a GPU. A model exported with a fixed batch runs that many.",
    )


class PaddlexEmbedderSettings(PaddleRuntimeSettings):
    """A PaddleX face_feature model through ``paddlex.create_model`` (extra ``paddle``, or ``paddle-gpu``).

    Faces are aligned to the ArcFace template when the detector gave landmarks, else cut from the box.
    """

    type: Literal["paddlex"] = "paddlex"
    model_name: str = Field(
        "MobileFaceNet", description="PaddleX model name: MobileFaceNet (128-d) or ResNet50_face (512-d, slower)."
    )
    model_dir: Path | None = Field(
        None,
        description="Folder of the export (inference.json or inference.pdmodel, inference.pdiparams, "
        "inference.yml). Unset = PaddleX downloads its official model (needs its model hoster).",
    )
    batch_size: int = Field(8, ge=1, description="Faces per model call; larger is faster per face on busy frames.")
    default_threshold: float = Field(
        0.45,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity this model is calibrated for; used when index.rec_threshold is unset.",
    )
    same_person_threshold: float = same_person_field(PADDLE_SAME_PERSON_THRESHOLD)

    @field_validator("model_name")
    @classmethod
    def _known_feature(cls, value: str) -> str:
        from streamd.faces.paddle_models import check_model_name

        return check_model_name("face_feature", value)


class PaddleEmbedderSettings(PaddleRuntimeSettings):
    """A 112x112 Paddle static-graph recogniser ([N,3,112,112] -> [N,D]) run by Paddle Inference directly.

    For exports PaddleX 3 does not describe, e.g. insight-face-paddle's MobileFace (no yml).
    """

    type: Literal["paddle"] = "paddle"
    model_dir: Path = Field(
        Path("/var/lib/streamd/models/mobileface_v1.0_infer"),
        description="Folder with inference.pdmodel (or .json) and inference.pdiparams.",
    )
    mean: float = Field(127.5, description="Subtracted from each pixel (0-255) before the model.")
    std: float = Field(127.5, gt=0, description="Pixels are divided by this after the mean is subtracted.")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order the model was trained on.")
    flip: bool = Field(
        False,
        description="Embed the face and its mirror image, sum the two vectors and normalise (flip-averaged "
        "features). Costs a second embedding per face; an index built with it and one built without it do not "
        "mix (the engine fingerprint differs).",
    )
    batch_size: int = Field(8, ge=1, description="Faces per model call; larger is faster per face on busy frames.")
    default_threshold: float = Field(
        0.45,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity this model is calibrated for; used when index.rec_threshold is unset.",
    )
    same_person_threshold: float = same_person_field(PADDLE_SAME_PERSON_THRESHOLD)


EmbedderSettings = Annotated[
    Union[DlibEmbedderSettings, OnnxEmbedderSettings, PaddlexEmbedderSettings, PaddleEmbedderSettings], Field(discriminator="type")
]


# --------------------------------------------------------------------------- quality gate


class QualitySettings(StrictModel):
    """Faces failing any of these are not embedded; each rejection is counted by reason."""

    min_face_px: int = Field(
        40, ge=0, description="Minimum of box width and height in pixels. Smaller faces give unreliable features."
    )
    min_blur_var: float = Field(
        5.0,
        ge=0.0,
        description="Minimum variance of the Laplacian on the face box resized to 112x112 grey pixels "
        "(higher = sharper; the same face scores the same at any size). Sharp stills score 40-200, "
        "soft but usable video faces 8-20, dark or smeared ones under 4. Raising it drops "
        "motion-blurred faces but also dim ones.",
    )
    max_yaw_deg: float = Field(
        60.0, ge=0.0, le=90.0, description="Largest head turn, estimated from the landmarks, still embedded."
    )
    min_det_score: float = Field(0.0, description="Minimum detector score for embedding (on top of det_threshold).")


# --------------------------------------------------------------------------- engine


class EngineSettings(StrictModel):
    """Which detector and embedder run, and how faces are gated before embedding."""

    detector: DetectorSettings = Field(default_factory=DlibDetectorSettings)
    embedder: EmbedderSettings = Field(default_factory=DlibEmbedderSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    device: str = Field("cpu", description="Device for engines that support one (cpu, gpu:0, ...).")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Images with more pixels than this are refused (decompression bombs)."
    )
    pipeline: Path | None = Field(
        None,
        description="A PaddleX face_recognition pipeline file (like configs/face_recognition.yaml) to take "
        "the recognition settings from: its SubModules become engine.detector and engine.embedder "
        "(type paddlex), its device engine.device, its index, rec_threshold and rec_topk the index "
        "settings unless this file's index: section sets them. A relative path is relative to this file. "
        "Cannot be combined with engine.detector or engine.embedder.",
    )


# --------------------------------------------------------------------------- index


class IndexSettings(StrictModel):
    """The feature library searched for each face (PaddleX layout: vector.index + id_map.yaml)."""

    dir: Path = Field(Path("/var/lib/streamd/index"), description="Directory holding vector.index and id_map.yaml.")
    rec_threshold: float | None = Field(
        None,
        description="Minimum similarity for a name: the cosine for IP indexes, and 1 - d²/2 (the same "
        "cosine on unit vectors) for L2 indexes, where PaddleX would compare the raw distance. Unset = "
        "the embedder's calibrated default. Higher means fewer wrong names but more unknowns.",
    )
    rec_topk: int = Field(5, ge=1, le=100, description="Gallery hits returned per face.")
    margin: float = Field(
        0.02,
        ge=0.0,
        description="The best label must beat the best *different* label by this much, else unknown. "
        "Raising it avoids confusing look-alikes but leaves more faces unnamed. 0.02 suits both "
        "engines: dlib's cosines crowd into 0.8-1.0, where 0.05 leaves most known faces unnamed, "
        "while ArcFace-style models spread them widely and barely feel a margin this small.",
    )
    watch: bool = Field(
        True,
        description="Reload the index while running when its files change (streamd gallery, PaddleX, a copy): "
        "loaded and checked off the frame path, swapped in between samples; a bad index is refused and "
        "the old one keeps serving.",
    )
    debounce_s: float = Field(
        1.0,
        ge=0.0,
        le=600.0,
        description="Quiet time after the last change before the index is loaded. Longer waits out slow "
        "writers that replace the two files one after the other; shorter picks changes up sooner.",
    )


class GallerySettings(StrictModel):
    """How gallery images become index vectors, and the optional watch of a gallery data_root."""

    multiple_faces: Literal["largest", "skip"] = Field(
        "largest", description="A gallery image with several faces: enrol its largest face, or skip the image."
    )
    data_root: Path | None = Field(
        None,
        description="Gallery folder the daemon keeps the index in step with (images/<ID>/*.jpg or gallery.txt); "
        "used when watch is true.",
    )
    watch: bool = Field(
        False,
        description="Watch data_root while running: an image added, replaced or removed is embedded or removed "
        "incrementally and the index saved, then reloaded. The index becomes managed by the gallery: an "
        "index without a record of its images is rebuilt once from data_root. Embedding takes CPU from the cameras.",
    )
    debounce_s: float = Field(
        2.0,
        ge=0.0,
        le=600.0,
        description="Quiet time after the last gallery change before images are embedded, so a folder being "
        "copied is handled in one pass.",
    )
    index_type: Literal["Flat", "IVF", "HNSW32"] = Field(
        "Flat",
        description="Index type when the watcher creates the index (an existing index keeps its type). HNSW32 "
        "searches large galleries fastest but every removal rebuilds its graph.",
    )
    metric_type: Literal["IP", "L2"] = Field("IP", description="Metric when the watcher creates the index.")

    @model_validator(mode="after")
    def _watch_needs_data_root(self) -> "GallerySettings":
        if self.watch and self.data_root is None:
            raise ValueError("gallery.watch needs gallery.data_root (the folder to watch)")
        return self


# --------------------------------------------------------------------------- root


class Settings(BaseSettings):
    """The whole daemon configuration."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    cameras: list[CameraSettings] = Field(
        default_factory=list,
        description="The cameras to watch (streamd.sources.config.CameraSettings); names must be unique.",
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so that STREAMD_* overrides what the YAML file (passed as init
        # values by load_settings) says.
        return (env_settings, init_settings, file_secret_settings)

    @field_validator("cameras")
    @classmethod
    def _unique_camera_names(cls, cameras: list[CameraSettings]) -> list[CameraSettings]:
        # Names key MQTT topics, metric labels and snapshot folders: two cameras must not share one.
        return check_unique_names(cameras)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {path}: {msg}")
    return "\n".join(lines)


#: Public name of the formatter: one line per problem, ``source: key.path: message``.
format_validation_errors = _format_errors


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_settings(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from an optional YAML file, ``STREAMD_*`` environment and explicit overrides.

    Raises ConfigError whose message has one line per problem, each naming the key path.
    """
    data: dict[str, Any] = read_yaml(Path(path)) if path else {}
    if overrides:
        data = deep_merge(data, overrides)
    source = str(path) if path else "config"
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    if settings.engine.pipeline is not None:
        settings = _apply_pipeline(settings, data, Path(path) if path else None, source)
    return settings


def _apply_pipeline(settings: Settings, data: dict[str, Any], path: Path | None, source: str) -> Settings:
    """Resolve ``engine.pipeline`` (a PaddleX face_recognition.yaml) into the engine and index sections."""
    from streamd.pipeline_config import settings_from_pipeline

    engine_data = data.get("engine") or {}
    for key in ("detector", "embedder"):
        if key in engine_data:
            raise ConfigError(
                f"{source}: engine.{key}: cannot be set together with engine.pipeline "
                "(the pipeline file's SubModules give the detector and the embedder)"
            )
    pipeline = Path(settings.engine.pipeline).expanduser()
    if not pipeline.is_absolute() and path is not None:
        pipeline = path.parent / pipeline
    return settings_from_pipeline(pipeline, settings, keep_index=(data.get("index") or {}).keys())


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested dicts key by key (``extra`` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dump_settings(settings: Settings) -> str:
    """The resolved settings as YAML (secrets masked by pydantic's SecretStr)."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)


def env_flag(name: str) -> bool:
    """True when an environment flag is set to a true-ish value (read at call time, never at import)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}

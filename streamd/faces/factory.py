"""Build the configured detector and embedder.

Dispatch is a dict from the settings' ``type`` to a builder, so a new engine is one function and
one dict entry. Builders import their heavy packages (dlib, onnxruntime, paddle) inside, turn a
missing package into :class:`EngineUnavailable` naming the extra to install, and a missing model
file into :class:`ModelError` naming the path and the setting that points to it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from streamd.errors import EngineUnavailable, ModelError
from streamd.faces.base import FaceDetector, FaceEmbedder

log = logging.getLogger(__name__)

#: The extra (``pip install 'streamd[<extra>]'``) that provides each engine type's packages.
ENGINE_EXTRAS = {"dlib": "dlib", "onnx": "onnx", "paddlex": "paddle", "paddle": "paddle"}


def require_package(module: str, engine: str, role: str) -> Any:
    """Import ``module`` or raise EngineUnavailable naming the extra of the engine that needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = ENGINE_EXTRAS.get(engine, engine)
        raise EngineUnavailable(
            f"engine.{role}.type={engine} needs the Python package {module!r} ({exc}): "
            f"pip install 'streamd[{extra}]'"
        ) from None


def require_model_file(path: Path, setting: str, engine: str) -> Path:
    """``path`` if it is a readable file, else ModelError naming the path, the setting and the extra."""
    path = Path(path).expanduser()
    extra = ENGINE_EXTRAS.get(engine, engine)
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not a model file (set {setting} to the model file)")
    if not path.is_file():
        raise ModelError(
            f"{path}: model file not found (set {setting}; the {engine} engine needs this file "
            f"and pip install 'streamd[{extra}]')"
        )
    return path


def _dlib_model_files(role: str) -> None:
    """The face_recognition_models files must be present (a broken install lacks them)."""
    frm = require_package("face_recognition_models", "dlib", role)
    for locate in (frm.pose_predictor_five_point_model_location, frm.face_recognition_model_location):
        path = Path(locate())
        if not path.is_file():
            raise ModelError(
                f"{path}: dlib model file not found (reinstall with pip install 'streamd[dlib]')"
            )


# --------------------------------------------------------------------------- detectors


def _cpu_only(engine: str, device: str) -> None:
    if device != "cpu":
        # dlib-bin wheels and opencv-python-headless are built without CUDA: say so, not pretend.
        log.warning("engine.device=%s: the %s engine runs on the CPU only", device, engine)


def _dlib_detector(settings: Any, device: str) -> FaceDetector:
    require_package("dlib", "dlib", "detector")
    _cpu_only("dlib", device)
    _dlib_model_files("detector")
    from streamd.faces.dlib_engine import DlibDetector

    return DlibDetector(
        model=settings.model,
        upsample=settings.upsample,
        det_threshold=settings.det_threshold,
        max_side=settings.max_side,
        retry_upsample_below=settings.retry_upsample_below,
    )


def _onnx_detector(settings: Any, device: str) -> FaceDetector:
    path = require_model_file(settings.model_path, "engine.detector.model_path", "onnx")
    if settings.model == "yunet":
        _cpu_only("YuNet (OpenCV DNN)", device)
        from streamd.faces.onnx_engine import YuNetDetector

        return YuNetDetector(
            path,
            det_threshold=settings.det_threshold,
            nms_threshold=settings.nms_threshold,
            input_size=settings.input_size,
            threads=settings.threads,
            backend=settings.yunet_backend,
        )
    require_package("onnxruntime", "onnx", "detector")
    from streamd.faces.onnx_engine import ScrfdDetector

    return ScrfdDetector(
        path,
        det_threshold=settings.det_threshold,
        nms_threshold=settings.nms_threshold,
        input_size=settings.input_size,
        threads=settings.threads,
        device=device,
    )


def _paddle_detector(settings: Any, device: str) -> FaceDetector:
    # paddle_engine imports paddle/paddlex itself and names the extra when they are missing.
    from streamd.faces.paddle_engine import build_detector

    return build_detector(settings, device)


#: settings.type -> builder(settings, device). Add new detector engines here.
DETECTOR_BUILDERS: dict[str, Callable[[Any, str], FaceDetector]] = {
    "dlib": _dlib_detector,
    "onnx": _onnx_detector,
    "paddlex": _paddle_detector,
    "paddle": _paddle_detector,
}


# --------------------------------------------------------------------------- embedders


def _dlib_embedder(settings: Any, device: str) -> FaceEmbedder:
    require_package("dlib", "dlib", "embedder")
    _cpu_only("dlib", device)
    _dlib_model_files("embedder")
    from streamd.faces.dlib_engine import DlibEmbedder

    return DlibEmbedder(num_jitters=settings.num_jitters, flip=settings.flip)


def _onnx_embedder(settings: Any, device: str) -> FaceEmbedder:
    path = require_model_file(settings.model_path, "engine.embedder.model_path", "onnx")
    require_package("onnxruntime", "onnx", "embedder")
    from streamd.faces.onnx_engine import OnnxArcFaceEmbedder

    return OnnxArcFaceEmbedder(
        path,
        mean=settings.mean,
        std=settings.std,
        color=settings.color,
        default_threshold=settings.default_threshold,
        same_person_threshold=settings.same_person_threshold,
        threads=settings.threads,
        device=device,
        batch_size=settings.batch_size,
        flip=settings.flip,
    )


def _paddle_embedder(settings: Any, device: str) -> FaceEmbedder:
    from streamd.faces.paddle_engine import build_embedder

    return build_embedder(settings, device)


#: settings.type -> builder(settings, device). Add new embedder engines here.
EMBEDDER_BUILDERS: dict[str, Callable[[Any, str], FaceEmbedder]] = {
    "dlib": _dlib_embedder,
    "onnx": _onnx_embedder,
    "paddlex": _paddle_embedder,
    "paddle": _paddle_embedder,
}


def _build(builders: dict[str, Callable[[Any, str], Any]], settings: Any, device: str, role: str) -> Any:
    builder = builders.get(settings.type)
    if builder is None:  # settings validation normally catches this first
        raise ModelError(
            f"engine.{role}.type={settings.type!r} is not a known {role}; valid: {', '.join(sorted(builders))}"
        )
    return builder(settings, device)


def create_detector(settings: Any, *, device: str = "cpu") -> FaceDetector:
    """The detector ``settings`` (one of the DetectorSettings models) describes."""
    return _build(DETECTOR_BUILDERS, settings, device, "detector")


def create_embedder(settings: Any, *, device: str = "cpu") -> FaceEmbedder:
    """The embedder ``settings`` (one of the EmbedderSettings models) describes."""
    return _build(EMBEDDER_BUILDERS, settings, device, "embedder")

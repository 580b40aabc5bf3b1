"""Paddle face engines: PaddleX's face modules (type ``paddlex``) and Paddle Inference directly (``paddle``).

Which path a model takes:

* ``paddlex``: any PaddleX 3.x face_detection / face_feature model (BlazeFace, BlazeFace-FPN-SSH,
  PicoDet_LCNet_x2_5_face, PP-YOLOE_plus-S_face, MobileFaceNet, ResNet50_face) through
  ``paddlex.create_model(model_name=..., model_dir=..., device=..., engine_config=...)``: PaddleX reads
  the pre/post-processing from the folder's ``inference.yml``. With ``model_dir`` unset PaddleX
  downloads the official model (online only). Legacy exports (``inference.pdmodel``) run too once
  an ``inference.yml`` is written next to them; streamd then turns Paddle's new IR off for them
  (PaddleX's default new IR crashes on them, see docs/paddlex.md).
* ``paddle``: a static-graph export run by Paddle Inference itself, without PaddleX, e.g.
  PaddleDetection's BlazeFace-FPN-SSH (``infer_cfg.yml``) or insight-face-paddle's MobileFace (no yml).
  Needs only ``paddlepaddle``.

Heavy imports (paddle, paddlex) happen in :func:`build_detector` / :func:`build_embedder`, never at
import time. A Paddle predictor is not thread-safe: use one engine object per thread.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from streamd.errors import EngineUnavailable, ModelError
from streamd.faces import paddle_models
from streamd.faces.align import ARCFACE_SIZE, face_chip
from streamd.faces.modelfile import file_sha256
from streamd.faces.paddle_models import ModelFiles, find_model_files
from streamd.faces.vectors import flip_average, l2_normalise
from streamd.settings import (
    PaddleDetectorSettings,
    PaddleEmbedderSettings,
    PaddlexDetectorSettings,
    PaddlexEmbedderSettings,
    PaddleRuntimeSettings,
    read_yaml,
)
from streamd.types import Face

log = logging.getLogger(__name__)

#: Seconds to wait for PaddleX's model hoster before saying we are offline.
HOSTER_TIMEOUT_S = 3.0
#: PaddleX's image predictors refuse to start unless these distributions are installed (its
#: ReadImage and PDF reader check their names with importlib.metadata, not the cv2 module).
PADDLEX_IMAGE_DEPS = ("opencv-contrib-python", "pypdfium2")


# --------------------------------------------------------------------------- imports


def _extra(device: str) -> str:
    return "streamd[paddle-gpu]" if device.split(":")[0] == "gpu" else "streamd[paddle]"


def import_paddle_inference(what: str, device: str) -> Any:
    """``paddle.inference``, or EngineUnavailable naming the extra to install."""
    try:
        import paddle.inference as paddle_inference
    except ImportError:
        raise EngineUnavailable(
            f"{what}: the Paddle engines need PaddlePaddle, which is not installed; "
            f"pip install '{_extra(device)}'"
        ) from None
    return paddle_inference


def import_paddlex(what: str, device: str) -> Any:
    """``paddlex``, or EngineUnavailable naming the extra to install.

    Sets ``PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK`` first (unless the user set it): PaddleX reads it
    once, when it is first imported, and otherwise probes four model hosters on every start, which
    hangs offline. streamd does its own short check (see :func:`ensure_downloadable`).
    """
    os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
    import_paddle_inference(what, device)
    try:
        import paddlex
    except ImportError:
        raise EngineUnavailable(
            f"{what}: engine type paddlex needs PaddleX, which is not installed; pip install '{_extra(device)}'"
        ) from None
    missing = [dep for dep in PADDLEX_IMAGE_DEPS if not _installed(dep)]
    if missing:
        raise EngineUnavailable(
            f"{what}: PaddleX's image models need {' and '.join(missing)} installed; "
            f"pip install '{_extra(device)}' (or use engine type paddle)"
        )
    return paddlex


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# --------------------------------------------------------------------------- offline check


def hoster_reachable(host: str, port: int = 443, timeout: float = HOSTER_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts; a daemon thread bounds the whole probe.
    worker = threading.Thread(target=probe, name="streamd-hoster-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def ensure_downloadable(model_name: str, what: str) -> None:
    """Fail fast when PaddleX would have to download ``model_name`` and cannot.

    PaddleX uses a model it downloaded before (its cache) without the network; otherwise it
    downloads from its model hoster. Offline that would end in a long wait and a multi-line
    error, so this says in one line what to do instead.
    """
    if (paddle_models.paddlex_cache_dir() / model_name).is_dir():
        return
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return  # the hoster may be reachable only through the proxy; let PaddleX try
    host = paddle_models.FACE_MODEL_HOST
    if not hoster_reachable(host):
        raise ModelError(
            f"{what}.model_dir is not set and PaddleX cannot download {model_name}: its model hoster "
            f"{host} is unreachable; set {what}.model_dir to a local model folder"
        )


# --------------------------------------------------------------------------- Paddle Inference


def _parse_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    try:
        return kind, int(index or 0)
    except ValueError:
        raise ModelError(f"engine.device={device!r}: expected cpu or KIND:N such as gpu:0 or npu:0") from None


def resolve_new_ir(runtime: PaddleRuntimeSettings, files: ModelFiles | None) -> bool | None:
    """The new-IR switch to use: the setting, else off for legacy programs, else Paddle's default."""
    if runtime.new_ir is not None:
        return runtime.new_ir
    if files is not None and files.legacy:
        return False
    return None


#: oneDNN's conv+activation fusion gives wrong scores on legacy BlazeFace-FPN-SSH (0.67 instead
#: of 1.0 on a clear face, boxes shifted) and changes nothing measurable on MobileFace.
LEGACY_ONEDNN_SKIP = ("conv_activation_onednn_fuse_pass",)


def resolve_delete_passes(runtime: PaddleRuntimeSettings, files: ModelFiles | None, device: str) -> list[str]:
    """Graph passes to skip: the setting, else the legacy oneDNN workaround, else none."""
    if runtime.delete_passes is not None:
        return list(runtime.delete_passes)
    on_cpu = device.split(":")[0] == "cpu"
    if runtime.mkldnn and on_cpu and files is not None and files.legacy:
        return list(LEGACY_ONEDNN_SKIP)
    return []


def paddle_predictor(files: ModelFiles, runtime: PaddleRuntimeSettings, device: str, what: str) -> Any:
    """A Paddle Inference predictor for ``files`` on ``device`` with the runtime settings."""
    pi = import_paddle_inference(what, device)
    kind, index = _parse_device(device)
    config = pi.Config(str(files.program), str(files.params))
    if kind == "cpu":
        config.disable_gpu()
        if runtime.mkldnn:
            config.enable_mkldnn()
            # Frames of several sizes would otherwise grow oneDNN's kernel cache without bound.
            config.set_mkldnn_cache_capacity(10)
        else:
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(runtime.threads)
    elif kind == "gpu":
        config.enable_use_gpu(256, index)
    elif kind == "xpu":
        config.enable_xpu()
        config.set_xpu_device_id(index)
    else:  # npu, mlu, gcu, ...: Paddle's custom-device plug-ins
        config.enable_custom_device(kind, index)
    new_ir = resolve_new_ir(runtime, files)
    if new_ir is not None:
        config.enable_new_ir(new_ir)
    for name in resolve_delete_passes(runtime, files, device):
        config.delete_pass(name)
    config.enable_memory_optim()
    config.disable_glog_info()
    try:
        return pi.create_predictor(config)
    except Exception as exc:  # Paddle raises ValueError/RuntimeError/its own types with C++ traces
        raise ModelError(f"{what}: Paddle cannot load {files.program.parent}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("-", "C++ Traceback", "Error Message Summary")):
            return line
    return type(exc).__name__


def _run(predictor: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        arr = np.ascontiguousarray(feeds[name])
        handle.reshape(list(arr.shape))
        handle.copy_from_cpu(arr)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


# --------------------------------------------------------------------------- detection preprocessing


class DetPreprocess:
    """PaddleDetection / PaddleX detector preprocessing read from the ``Preprocess`` list of a yml.

    Supports the ops face detectors use: NormalizeImage, Resize, Permute, PadStride. Images are
    converted to RGB first, as PaddleDetection's decoder does.
    """

    def __init__(self, ops: Sequence[dict[str, Any]], source: Path) -> None:
        self.ops: list[tuple[str, dict[str, Any]]] = []
        for op in ops:
            op = dict(op)
            kind = op.pop("type", None)
            if kind not in ("NormalizeImage", "Resize", "Permute", "PadStride"):
                raise ModelError(
                    f"{source}: Preprocess op {kind!r} is not supported by engine type paddle "
                    "(NormalizeImage, Resize, Permute, PadStride are); use engine type paddlex"
                )
            self.ops.append((kind, op))

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BGR uint8 -> (NCHW float32 tensor, im_shape [1,2], scale_factor [1,2])."""
        img = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32)
        scale_y = scale_x = 1.0
        # im_shape is the size after Resize, before any padding (PaddleDetection's convention).
        resized_hw = np.asarray([img.shape[:2]], np.float32)
        for kind, args in self.ops:
            if kind == "NormalizeImage":
                if args.get("is_scale", True):
                    img = img / 255.0
                if args.get("norm_type", "mean_std") == "mean_std":
                    img = (img - np.asarray(args.get("mean", [0.485, 0.456, 0.406]), np.float32)) / np.asarray(
                        args.get("std", [0.229, 0.224, 0.225]), np.float32
                    )
            elif kind == "Resize":
                th, tw = args["target_size"]
                h, w = img.shape[:2]
                if args.get("keep_ratio", True):
                    scale = min(max(th, tw) / max(h, w), min(th, tw) / min(h, w))
                    sy = sx = scale
                else:
                    sy, sx = th / h, tw / w
                img = cv2.resize(img, None, fx=sx, fy=sy, interpolation=int(args.get("interp", 1)))
                scale_y, scale_x = scale_y * sy, scale_x * sx
                resized_hw = np.asarray([img.shape[:2]], np.float32)
            elif kind == "PadStride":
                stride = int(args.get("stride", 32))
                h, w = img.shape[:2]
                ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
                padded = np.zeros((ph, pw, img.shape[2]), np.float32)
                padded[:h, :w] = img
                img = padded
            # Permute (HWC -> CHW) is done below for every network.
        img = img.transpose(2, 0, 1)
        return img[None].astype(np.float32), resized_hw, np.asarray([[scale_y, scale_x]], np.float32)


def input_size_of(ops: Sequence[dict[str, Any]] | None) -> tuple[int, int] | None:
    """(height, width) of a fixed-size Resize (keep_ratio false) in a Preprocess list, else None."""
    for op in ops or []:
        if op.get("type") == "Resize" and not op.get("keep_ratio", True):
            th, tw = op["target_size"]
            return int(th), int(tw)
    return None


def pad_small(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``image`` on a black canvas of ``size`` (bottom/right padding) when it fits inside, else as is.

    Padding at the bottom and right leaves box coordinates unchanged.
    """
    if size is None:
        return image
    h, w = image.shape[:2]
    th, tw = size
    if h > th or w > tw or (h, w) == (th, tw):
        return image
    canvas = np.zeros((th, tw, 3), dtype=image.dtype)
    canvas[:h, :w] = image
    return canvas


def _boxes_to_faces(rows: Iterable[Sequence[float]], image: np.ndarray, threshold: float) -> list[Face]:
    """Rows of (class, score, x1, y1, x2, y2) in image pixels -> faces, best first."""
    h, w = image.shape[:2]
    faces = []
    for row in rows:
        cls, score, x1, y1, x2, y2 = (float(v) for v in row[:6])
        if cls < 0 or score < threshold:
            continue  # Paddle detectors return one (-1, ...) row when they find nothing
        box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
        if box[2] > box[0] and box[3] > box[1]:
            faces.append(Face(box=box, score=score))
    faces.sort(key=lambda f: f.score, reverse=True)
    return faces


# --------------------------------------------------------------------------- engine type paddle


class PaddleDetector:
    """A PaddleDetection-style face detector run by Paddle Inference (boxes only, no landmarks)."""

    name = "paddle"

    def __init__(self, settings: PaddleDetectorSettings, device: str = "cpu", *, what: str = "engine.detector"):
        try:
            files = find_model_files(settings.model_dir, need_yml=False, what=what)
        except FileNotFoundError as exc:
            raise ModelError(str(exc)) from None
        if files.config is None:
            raise ModelError(f"{what}: {settings.model_dir} is missing infer_cfg.yml (or inference.yml)")
        cfg = read_yaml(files.config)
        ops = cfg.get("Preprocess")
        if not isinstance(ops, list):
            raise ModelError(f"{files.config}: no Preprocess list; is this a detector export?")
        self.preprocess = DetPreprocess(ops, files.config)
        self._pad_to = input_size_of(ops) if settings.pad_small else None
        self.det_threshold = float(settings.det_threshold)
        self.model_dir = Path(settings.model_dir)
        self._predictor = paddle_predictor(files, settings, device, what)
        names = set(self._predictor.get_input_names())
        if not {"image", "im_shape", "scale_factor"} >= names or "image" not in names:
            raise ModelError(
                f"{what}: {self.model_dir} is not a PaddleDetection detector "
                f"(inputs {sorted(names)}, expected image, im_shape, scale_factor)"
            )
        self._inputs = names

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, best first."""
        tensor, im_shape, scale = self.preprocess(pad_small(image, self._pad_to))
        feeds = {"image": tensor, "im_shape": im_shape, "scale_factor": scale}
        outputs = _run(self._predictor, {k: v for k, v in feeds.items() if k in self._inputs})
        rows = np.asarray(outputs[0]).reshape(-1, outputs[0].shape[-1]) if outputs[0].size else []
        return _boxes_to_faces(rows, image, self.det_threshold)


class PaddleEmbedder:
    """A 112x112 Paddle recogniser run by Paddle Inference; vectors L2-normalised.

    ``flip`` (settings): each face is also embedded mirrored, the two unit vectors summed and normalised.
    """

    name = "paddle"

    def __init__(self, settings: PaddleEmbedderSettings, device: str = "cpu", *, what: str = "engine.embedder"):
        try:
            files = find_model_files(settings.model_dir, need_yml=False, what=what)
        except FileNotFoundError as exc:
            raise ModelError(str(exc)) from None
        self.model_dir = Path(settings.model_dir)
        self.mean, self.std, self.color = float(settings.mean), float(settings.std), settings.color
        self.batch_size = int(settings.batch_size)
        self.flip = bool(settings.flip)
        self.default_threshold = float(settings.default_threshold)
        self.same_person_threshold = float(settings.same_person_threshold)
        self._predictor = paddle_predictor(files, settings, device, what)
        names = self._predictor.get_input_names()
        if len(names) != 1:
            raise ModelError(f"{what}: {self.model_dir} must take one [N,3,112,112] input, it takes {names}")
        self._input = names[0]
        # Paddle does not tell a legacy program's input shape before a run: probe with one face.
        try:
            probe = self._forward(np.zeros((1, 3, ARCFACE_SIZE, ARCFACE_SIZE), np.float32))
        except Exception as exc:  # Paddle's shape errors come as ValueError/RuntimeError with C++ context
            raise ModelError(
                f"{what}: {self.model_dir} does not take a [N,3,112,112] input (an ArcFace-style "
                f"recogniser): {_first_line(exc)}"
            ) from None
        if probe.ndim != 2:
            raise ModelError(f"{what}: {self.model_dir} must output [N,D] features, got {list(probe.shape)}")
        self.dim = int(probe.shape[1])
        self.fingerprint = (
            f"paddle:sha256={file_sha256(files.params)}:align=arcface{ARCFACE_SIZE}:"
            f"color={self.color}:mean={self.mean:g}:std={self.std:g}"
        )
        if self.flip:
            # Flip-averaged vectors do not mix with plain ones in one index.
            self.fingerprint += ":flip"

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(_run(self._predictor, {self._input: batch})[0])

    def preprocess(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """112x112 BGR chips -> the float32 NCHW tensor."""
        arr = np.stack(chips).astype(np.float32)
        if self.color == "RGB":
            arr = arr[..., ::-1]
        return np.ascontiguousarray(((arr - self.mean) / self.std).transpose(0, 3, 1, 2))

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One L2-normalised vector per face: aligned with landmarks, else cut from the box."""
        return self.embed_chips([face_chip(image, face, ARCFACE_SIZE) for face in faces])

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Vectors for 112x112 BGR face chips, shape (len(chips), dim); flip-averaged when ``flip``."""
        if self.flip:
            return flip_average(self._embed_plain, chips)
        return self._embed_plain(chips)

    def _embed_plain(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """One unit vector per chip as it is."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            self._forward(self.preprocess(chips[i : i + self.batch_size])) for i in range(0, len(chips), self.batch_size)
        ]
        return l2_normalise(np.concatenate(parts))


# --------------------------------------------------------------------------- engine type paddlex


def paddlex_model(
    settings: PaddlexDetectorSettings | PaddlexEmbedderSettings, module: str, device: str, what: str
) -> tuple[Any, ModelFiles | None]:
    """``paddlex.create_model`` for the settings, with streamd's checks and one-line errors."""
    files = None
    if settings.model_dir is not None:
        try:
            files = find_model_files(settings.model_dir, need_yml=True, what=what)
        except FileNotFoundError as exc:
            raise ModelError(str(exc)) from None
        declared = (read_yaml(files.config).get("Global") or {}).get("model_name") if files.config else None
        if declared is not None and declared != settings.model_name:
            raise ModelError(
                f"{what}: {files.config} is for {declared}, but model_name is {settings.model_name}"
            )
    paddlex = import_paddlex(what, device)
    if files is None:
        ensure_downloadable(settings.model_name, what)
    engine_config: dict[str, Any] = {}
    kind, _ = _parse_device(device)
    if kind == "cpu":
        engine_config["run_mode"] = "mkldnn" if settings.mkldnn else "paddle"
        engine_config["cpu_threads"] = settings.threads
    new_ir = resolve_new_ir(settings, files)
    if new_ir is not None:
        engine_config["enable_new_ir"] = new_ir
    passes = resolve_delete_passes(settings, files, device)
    if passes:
        engine_config["delete_pass"] = passes
    try:
        model = paddlex.create_model(
            model_name=settings.model_name,
            model_dir=str(settings.model_dir) if settings.model_dir is not None else None,
            device=device,
            batch_size=settings.batch_size,
            engine_config=engine_config,
        )
    except Exception as exc:  # PaddleX raises ValueError, RuntimeError, DependencyError, plain Exception
        where = settings.model_dir or "PaddleX's download"
        raise ModelError(f"{what}: PaddleX cannot load {settings.model_name} ({module}) from {where}: {_first_line(exc)}") from None
    return model, files


def _model_dir_of(model: Any, files: ModelFiles | None) -> Path | None:
    if files is not None:
        return files.program.parent
    found = getattr(model, "model_dir", None)
    return Path(found) if found else None


class PaddlexDetector:
    """A PaddleX face_detection model; boxes only (faces are cut from the box for the embedder)."""

    name = "paddlex"

    def __init__(self, settings: PaddlexDetectorSettings, device: str = "cpu", *, what: str = "engine.detector"):
        self.model_name = settings.model_name
        self.det_threshold = float(settings.det_threshold)
        self.batch_size = int(settings.batch_size)
        self._model, files = paddlex_model(settings, "face_detection", device, what)
        self.model_dir = _model_dir_of(self._model, files)
        ops = read_yaml(files.config).get("Preprocess") if files is not None and files.config else None
        self._pad_to = input_size_of(ops) if settings.pad_small else None

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, best first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of several images, run ``batch_size`` at a time."""
        if not images:
            return []
        padded = [pad_small(image, self._pad_to) for image in images]
        results = self._model.predict(padded, batch_size=self.batch_size, threshold=self.det_threshold)
        out = []
        for image, result in zip(images, results):
            rows = [(b["cls_id"], b["score"], *b["coordinate"]) for b in result["boxes"]]
            out.append(_boxes_to_faces(rows, image, self.det_threshold))
        return out


class PaddlexEmbedder:
    """A PaddleX face_feature model; vectors L2-normalised (PaddleX normalises them too)."""

    name = "paddlex"

    def __init__(self, settings: PaddlexEmbedderSettings, device: str = "cpu", *, what: str = "engine.embedder"):
        self.model_name = settings.model_name
        self.batch_size = int(settings.batch_size)
        self.default_threshold = float(settings.default_threshold)
        self.same_person_threshold = float(settings.same_person_threshold)
        self._model, files = paddlex_model(settings, "face_feature", device, what)
        self.model_dir = _model_dir_of(self._model, files)
        probe = self.embed_chips([np.zeros((ARCFACE_SIZE, ARCFACE_SIZE, 3), np.uint8)], normalise=False)
        self.dim = int(probe.shape[1])
        params = self.model_dir / "inference.pdiparams" if self.model_dir else None
        weights = file_sha256(params) if params is not None and params.is_file() else "official"
        self.fingerprint = f"paddlex:{self.model_name}:sha256={weights}:align=arcface{ARCFACE_SIZE}"

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One L2-normalised vector per face: aligned with landmarks, else cut from the box."""
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_chips([face_chip(image, face, ARCFACE_SIZE) for face in faces])

    def embed_chips(self, chips: Sequence[np.ndarray], *, normalise: bool = True) -> np.ndarray:
        """Vectors for BGR face chips (PaddleX resizes them to the model's input size)."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        results = self._model.predict(list(chips), batch_size=self.batch_size)
        feats = np.stack([own_feature_row(r["feature"], i % self.batch_size) for i, r in enumerate(results)])
        return l2_normalise(feats) if normalise else feats


def own_feature_row(feature: Any, index_in_batch: int) -> np.ndarray:
    """This face's vector from a PaddleX face_feature result.

    PaddleX 3.7 gives every result of a batch the whole batch's (B, D) feature array (its
    NormalizeFeatures returns one array where the result splitter expects a list), so the row
    of this face is picked by its place in the batch; a (D,) or (1, D) feature is used as is.
    """
    arr = np.asarray(feature, np.float32)
    if arr.ndim == 2 and arr.shape[0] > 1:
        return arr[index_in_batch]
    return arr.reshape(-1)


# --------------------------------------------------------------------------- landmarks for box-only detectors


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class LandmarkRefiner:
    """Finds five landmarks for box-only faces with YuNet run on the region around each box.

    Recognisers are trained on aligned faces: MobileFace on LFW reaches 98.7 % aligned but 90.4 %
    on box crops. YuNet looks at a square region ``1 + 2 * margin`` times the box; its face that
    overlaps the box best (IoU >= ``min_iou``) lends its landmarks. The box and score stay the
    detector's; a face YuNet does not confirm keeps no landmarks (and is cut from its box).
    """

    def __init__(self, yunet: Any, *, margin: float = 0.4, min_iou: float = 0.3) -> None:
        self.yunet = yunet
        self.margin = float(margin)
        self.min_iou = float(min_iou)

    def refine(self, image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """The faces with landmarks added where YuNet confirms them."""
        out = []
        for face in faces:
            x1, y1, x2, y2 = face.box
            side = int(np.ceil(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * self.margin)))
            if side < 8:
                out.append(face)
                continue
            left = int(round((x1 + x2) / 2.0 - side / 2.0))
            top = int(round((y1 + y2) / 2.0 - side / 2.0))
            shifted = (x1 - left, y1 - top, x2 - left, y2 - top)
            # Always a square region (black outside the image): YuNet then keeps one input size,
            # where changing it per face would rebuild its network each time.
            candidates = self.yunet.detect(_square_region(image, left, top, side))
            best = max(candidates, key=lambda c: _box_iou(c.box, shifted), default=None)
            if best is None or best.landmarks is None or _box_iou(best.box, shifted) < self.min_iou:
                out.append(face)
                continue
            landmarks = best.landmarks + np.asarray([left, top], np.float32)
            out.append(Face(box=face.box, score=face.score, landmarks=landmarks))
        return out


def _square_region(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` region at (left, top); parts outside the image are black."""
    h, w = image.shape[:2]
    canvas = np.zeros((side, side, 3), dtype=image.dtype)
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return canvas


class LandmarkedDetector:
    """A box-only detector whose faces get YuNet's landmarks (``landmarks: yunet``)."""

    def __init__(self, detector: Any, refiner: LandmarkRefiner) -> None:
        self.detector = detector
        self.refiner = refiner
        self.name = f"{detector.name}+yunet"

    def detect(self, image: np.ndarray) -> list[Face]:
        """The detector's faces, with landmarks where YuNet confirms them."""
        return self.refiner.refine(image, self.detector.detect(image))


def landmark_refiner(settings: PaddlexDetectorSettings | PaddleDetectorSettings, what: str) -> LandmarkRefiner:
    """The YuNet refiner the settings ask for (``landmarks: yunet``)."""
    from streamd.faces.onnx_engine import YuNetDetector

    path = Path(settings.landmarks_model).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: YuNet model file not found (set {what}.landmarks_model, or landmarks: none)")
    # 320 px is plenty for one face region; a lower threshold because the detector already found a face.
    return LandmarkRefiner(YuNetDetector(path, det_threshold=0.3, input_size=320, threads=settings.threads))


# --------------------------------------------------------------------------- factory entry points


def build_detector(settings: PaddlexDetectorSettings | PaddleDetectorSettings, device: str = "cpu") -> Any:
    """The detector for ``engine.detector`` settings of type ``paddlex`` or ``paddle``."""
    what = "engine.detector"
    refiner = landmark_refiner(settings, what) if settings.landmarks == "yunet" else None
    detector: Any
    if isinstance(settings, PaddlexDetectorSettings):
        detector = PaddlexDetector(settings, device, what=what)
    else:
        detector = PaddleDetector(settings, device, what=what)
    return LandmarkedDetector(detector, refiner) if refiner is not None else detector


def build_embedder(settings: PaddlexEmbedderSettings | PaddleEmbedderSettings, device: str = "cpu") -> Any:
    """The embedder for ``engine.embedder`` settings of type ``paddlex`` or ``paddle``."""
    if isinstance(settings, PaddlexEmbedderSettings):
        return PaddlexEmbedder(settings, device)
    return PaddleEmbedder(settings, device)

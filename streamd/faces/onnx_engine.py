"""ONNX face engines: YuNet (cv2.FaceDetectorYN), SCRFD and ArcFace-style recognisers (onnxruntime).

Construct them through :mod:`streamd.faces.factory`, which checks the model file and the packages
first; the constructors here assume both are present. onnxruntime is imported lazily so that this
module can be imported (for type names) without the ``onnx`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from streamd.errors import EngineUnavailable, ModelError
from streamd.faces.align import ARCFACE_SIZE, face_chip
from streamd.faces.calibration import ONNX_SAME_PERSON_THRESHOLD
from streamd.faces.modelfile import file_sha256
from streamd.faces.vectors import flip_average, l2_normalise
from streamd.types import Face


# --------------------------------------------------------------------------- helpers


def ort_session(path: Path, *, threads: int = 1, device: str = "cpu", model: bytes | None = None) -> Any:
    """An onnxruntime InferenceSession with ``threads`` intra-op threads (0 = library default).

    ``device`` is ``cpu`` or ``gpu[:N]`` / ``cuda[:N]`` (needs onnxruntime-gpu). ``model``: the
    model's bytes when they are not the file at ``path`` as it is (rewritten in memory); ``path``
    still names it in errors.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers are noise for users
    providers: list[Any] = ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind in ("gpu", "cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable(
                f"engine.device={device} needs onnxruntime with CUDA (pip install onnxruntime-gpu); "
                f"available providers: {', '.join(ort.get_available_providers())}"
            )
        providers = [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    elif kind != "cpu":
        raise ModelError(f"engine.device={device!r} is not a device onnxruntime knows (use cpu or gpu:N)")
    try:
        return ort.InferenceSession(str(path) if model is None else model, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load the ONNX model ({first})") from None


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def _scale_to(image: np.ndarray, longer_side: int) -> tuple[np.ndarray, float]:
    """The image resized so that its longer side is ``longer_side``, and the scale used."""
    h, w = image.shape[:2]
    return _resized(image, longer_side / max(h, w))


def _resized(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """The image resized by ``scale`` (at least 1x1 pixel), and the scale."""
    h, w = image.shape[:2]
    if abs(scale - 1.0) < 1e-6:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


# --------------------------------------------------------------------------- YuNet


class YuNetDetector:
    """YuNet; boxes, scores and 5 landmarks in ArcFace order.

    The frame is scaled so that its longer side is ``input_size`` (small stills are enlarged, which
    helps YuNet find their faces) and the results are mapped back to frame pixels. ``backend``:
    ``onnxruntime`` (:mod:`streamd.faces.yunet`, 2.3-2.8x faster), ``opencv``
    (``cv2.FaceDetectorYN``) or ``auto`` (onnxruntime when installed).
    """

    name = "yunet"

    def __init__(
        self,
        model_path: Path,
        *,
        det_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        input_size: int = 640,
        threads: int = 1,
        top_k: int = 5000,
        backend: str = "auto",
    ) -> None:
        self.model_path = Path(model_path)
        self.input_size = int(input_size)
        self._size: tuple[int, int] = (self.input_size, self.input_size)
        self.backend = resolve_yunet_backend(backend)
        if self.backend == "onnxruntime":
            from streamd.faces.yunet import YuNetOnnxRuntime

            self._ort: Any = YuNetOnnxRuntime(
                self.model_path, det_threshold=det_threshold, nms_threshold=nms_threshold, top_k=top_k, threads=threads
            )
            return
        if threads > 0:
            # OpenCV has one process-wide thread pool; YuNet runs on it.
            cv2.setNumThreads(threads)
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (self.input_size, self.input_size), det_threshold, nms_threshold, top_k
            )
        except cv2.error as exc:
            raise ModelError(f"{self.model_path}: cv2.FaceDetectorYN cannot load it as YuNet ({exc.err})") from None

    def detection_scale(self, shape: Sequence[int]) -> float:
        """The factor a frame of ``shape`` is resized by before detection (its longer side to ``input_size``)."""
        return self.input_size / max(int(shape[0]), int(shape[1]))

    def detect(self, image: np.ndarray, *, scale: float | None = None) -> list[Face]:
        """Faces in a BGR uint8 image; ``scale``: resize by this factor instead of fitting ``input_size``
        (a crop of a frame is detected at the frame's scale, see :mod:`streamd.faces.regions`)."""
        scaled, scale = _scale_to(image, self.input_size) if scale is None else _resized(image, scale)
        rows = self._rows(scaled)
        if rows is None:
            return []
        h, w = image.shape[:2]
        faces = []
        for row in rows:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            box = (max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh))
            # YuNet gives right eye, left eye, nose tip, right and left mouth corner (the
            # subject's right = the image's left), which is exactly the ArcFace order.
            landmarks = np.asarray(row[4:14], dtype=np.float32).reshape(5, 2) / scale
            faces.append(Face(box=box, score=float(row[14]), landmarks=landmarks))
        return faces

    def _rows(self, scaled: np.ndarray) -> np.ndarray | None:
        """``cv2.FaceDetectorYN.detect``'s rows for an image already at detection scale."""
        if self.backend == "onnxruntime":
            return self._ort.detect(np.ascontiguousarray(scaled))
        size = (scaled.shape[1], scaled.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        return self._net.detect(scaled)[1]


def resolve_yunet_backend(backend: str) -> str:
    """``auto``: onnxruntime when it and the onnx package are installed (2.3-2.8x faster), else OpenCV."""
    if backend == "auto":
        import importlib.util

        have = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
        return "onnxruntime" if have else "opencv"
    if backend not in ("onnxruntime", "opencv"):
        raise ModelError(f"YuNet backend {backend!r}: use auto, onnxruntime or opencv")
    return backend


# --------------------------------------------------------------------------- SCRFD


class ScrfdDetector:
    """SCRFD (insightface det_500m / det_2.5g / det_10g) through onnxruntime.

    Frames whose longer side exceeds ``input_size`` are shrunk to it, smaller ones are left as they
    are (enlarging a 250x250 portrait to 640 makes its face too large for SCRFD's anchors: 5 of
    1549 LFW faces were lost that way), then padded (bottom/right) to a multiple of 32; anchors
    are 2 per cell at strides 8, 16 and 32. The network predicts distances
    from each anchor centre to the box sides and keypoint offsets, both in units of the stride.
    Preprocessing as insightface: RGB, (x - 127.5) / 128.
    """

    name = "scrfd"
    _STRIDES = (8, 16, 32)
    _ANCHORS = 2

    def __init__(
        self,
        model_path: Path,
        *,
        det_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int = 640,
        threads: int = 1,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path)
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self.input_size = int(input_size)
        self._session = ort_session(self.model_path, threads=threads, device=device)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.model_path}: not an SCRFD detector (expected one [1,3,H,W] input)")
        self._input_name = inputs[0].name
        outputs = self._session.get_outputs()
        if len(outputs) != 9:
            raise ModelError(
                f"{self.model_path}: not an SCRFD detector with keypoints "
                f"(expected 9 outputs: scores, boxes, keypoints at 3 strides; got {len(outputs)})"
            )
        self._output_names = [o.name for o in outputs]
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        centers = self._centers.get(key)
        if centers is None:
            ys, xs = np.mgrid[:height, :width]
            centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
            centers = np.repeat(centers, self._ANCHORS, axis=0)
            self._centers[key] = centers
        return centers

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image."""
        scaled, scale = _scale_to(image, min(self.input_size, max(image.shape[:2])))
        sh, sw = scaled.shape[:2]
        ph, pw = -(-sh // 32) * 32, -(-sw // 32) * 32
        canvas = np.zeros((ph, pw, 3), dtype=np.uint8)
        canvas[:sh, :sw] = scaled
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, (pw, ph), (127.5, 127.5, 127.5), swapRB=True)
        outs = self._session.run(self._output_names, {self._input_name: blob})
        # Outputs come as scores, boxes, keypoints (by last dimension 1, 4, 10), each at three
        # strides; sort each kind by row count (most rows = stride 8) instead of trusting names.
        by_kind: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
        for out in outs:
            arr = np.asarray(out).reshape(-1, out.shape[-1])
            if arr.shape[1] not in by_kind:
                raise ModelError(f"{self.model_path}: unexpected SCRFD output of shape {out.shape}")
            by_kind[arr.shape[1]].append(arr)
        for kind in by_kind.values():
            kind.sort(key=len, reverse=True)
        all_boxes, all_scores, all_kps = [], [], []
        for level, stride in enumerate(self._STRIDES):
            scores = by_kind[1][level][:, 0]
            keep = np.where(scores >= self.det_threshold)[0]
            if keep.size == 0:
                continue
            centers = self._anchor_centers(ph // stride, pw // stride, stride)[keep]
            dist = by_kind[4][level][keep] * stride
            kps = by_kind[10][level][keep].reshape(-1, 5, 2) * stride
            boxes = np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1)
            all_boxes.append(boxes)
            all_scores.append(scores[keep])
            all_kps.append(kps + centers[:, None, :])
        if not all_boxes:
            return []
        boxes = np.concatenate(all_boxes) / scale
        scores = np.concatenate(all_scores)
        kps = np.concatenate(all_kps) / scale
        h, w = image.shape[:2]
        faces = []
        for i in nms(boxes, scores, self.nms_threshold):
            x1, y1, x2, y2 = boxes[i]
            box = (max(0.0, float(x1)), max(0.0, float(y1)), min(float(w), float(x2)), min(float(h), float(y2)))
            faces.append(Face(box=box, score=float(scores[i]), landmarks=kps[i]))
        return faces


# --------------------------------------------------------------------------- ArcFace-style embedder


class OnnxArcFaceEmbedder:
    """Any ArcFace-style recogniser ``[N,3,112,112] -> [N,D]`` through onnxruntime.

    Faces are aligned to the ArcFace template with their 5 landmarks (or cropped from the box when
    the detector gave none), converted to ``color`` order, normalised as ``(pixel - mean) / std``
    and run in batches of ``batch_size`` (default: one at a time on the CPU, 16 on a GPU; as
    many as a model with a fixed batch dimension takes). Vectors are L2-normalised, so cosine
    similarity is a dot product. ``flip``: each face is also embedded mirrored and the two unit
    vectors are summed and normalised again (:func:`flip_average`), at the cost of a second embedding.
    """

    name = "onnx"

    def __init__(
        self,
        model_path: Path,
        *,
        mean: float = 127.5,
        std: float = 128.0,
        color: str = "RGB",
        default_threshold: float = 0.45,
        same_person_threshold: float = ONNX_SAME_PERSON_THRESHOLD,
        threads: int = 1,
        device: str = "cpu",
        batch_size: int | None = None,
        flip: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.flip = bool(flip)
        self.mean = float(mean)
        self.std = float(std)
        self.color = color
        self.default_threshold = float(default_threshold)
        self.same_person_threshold = float(same_person_threshold)
        self._session = ort_session(self.model_path, threads=threads, device=device)
        inputs = self._session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(inputs) != 1 or not _is_arcface_input(shape):
            got = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
            raise ModelError(
                f"{self.model_path}: the recogniser's input must be [N,3,112,112] (an ArcFace-style "
                f"112x112 model), got {got} (engine.embedder.model_path)"
            )
        self._input_name = inputs[0].name
        self._output_name = self._session.get_outputs()[0].name
        # A model exported with a fixed batch (MobileFaceNet: 1) takes exactly that many faces.
        self._fixed_batch: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if batch_size is None:
            # On the CPU a batch is no faster per face and onnxruntime's arena keeps the memory of
            # the largest one; a GPU gains from batches.
            batch_size = 1 if device == "cpu" else 16
        self.batch_size = self._fixed_batch or max(1, int(batch_size))
        # The probe runs as few faces as the model takes, so that it does not grow the arena.
        probe = self._run(np.zeros((self._fixed_batch or 1, 3, ARCFACE_SIZE, ARCFACE_SIZE), dtype=np.float32))
        if probe.ndim != 2:
            raise ModelError(
                f"{self.model_path}: the recogniser's output must be [N,D], got shape {list(probe.shape)}"
            )
        self.dim = int(probe.shape[1])
        self.fingerprint = (
            f"onnx-arcface:sha256={file_sha256(self.model_path)}:"
            f"align=arcface{ARCFACE_SIZE}:color={self.color}:mean={self.mean:g}:std={self.std:g}"
        )
        if self.flip:
            # Flip-averaged vectors are not comparable with plain ones: an index of either kind is
            # refused by an engine of the other.
            self.fingerprint += ":flip"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run([self._output_name], {self._input_name: batch})[0])

    def preprocess(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Aligned BGR chips -> the float32 NCHW tensor the model takes."""
        arr = np.stack(chips).astype(np.float32)
        if self.color == "RGB":
            arr = arr[..., ::-1]
        arr = (arr - self.mean) / self.std
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """One L2-normalised float32 vector per face, shape (len(faces), dim)."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        chips = [face_chip(image, face, ARCFACE_SIZE) for face in faces]
        return self.embed_chips(chips)

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Vectors for already aligned 112x112 BGR chips (flip-averaged when ``flip``)."""
        if self.flip:
            return flip_average(self._embed_plain, chips)
        return self._embed_plain(chips)

    def _embed_plain(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """One unit vector per chip as it is."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(chips), self.batch_size):
            part = list(chips[start : start + self.batch_size])
            real = len(part)
            if self._fixed_batch and real < self._fixed_batch:
                part += [np.zeros_like(part[0])] * (self._fixed_batch - real)
            out.append(self._run(self.preprocess(part))[:real])
        return l2_normalise(np.concatenate(out))


def _is_arcface_input(shape: list[Any]) -> bool:
    """True for [N,3,112,112] where N may be symbolic (dynamic batch)."""
    return len(shape) == 4 and shape[1] == 3 and shape[2] == ARCFACE_SIZE and shape[3] == ARCFACE_SIZE

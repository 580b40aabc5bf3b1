"""The YuNet network run by onnxruntime, with OpenCV's ``FaceDetectorYN`` decoding.

``cv2.FaceDetectorYN`` runs YuNet on OpenCV's DNN module. onnxruntime runs the same ONNX file
2.3-2.8x faster on this project's CPU (one thread: 640x352 in 3.5 ms against 8.1 ms, a 160x192
region in 0.4 ms against 1.1 ms), and detection is the largest part of the daemon's recognition
work. The file declares a fixed 640x640 input; its reshapes already take any size, so only the
declared input and output shapes are made symbolic (in memory, with the ``onnx`` package).

:meth:`YuNetOnnxRuntime.detect` returns the rows ``cv2.FaceDetectorYN.detect`` returns —
``x, y, w, h``, five landmarks, score — decoded as OpenCV 4.x decodes the 2023mar model: the
image is padded (bottom, right) to a multiple of 32, fed as raw BGR values, and for each stride
s in 8, 16, 32 and grid cell (r, c) the score is ``sqrt(clip(cls) * clip(obj))``, the box centre
``((c, r) + offset) * s``, its size ``exp(size) * s`` and the landmarks ``((c, r) + kps) * s``;
then ``cv2.dnn.NMSBoxes``. A test checks the two backends find the same faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamd.errors import ModelError

STRIDES = (8, 16, 32)
#: The network's input is padded to a multiple of this.
DIVISOR = 32
OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)


def dynamic_yunet(model_path: Path) -> bytes:
    """The YuNet ONNX file with its input height and width, and its outputs' lengths, symbolic."""
    try:
        import onnx
    except ImportError:
        raise ModelError("YuNet on onnxruntime needs the onnx package: pip install 'streamd[onnx]'") from None
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise ModelError(f"{model_path}: cannot read it as an ONNX file ({exc})") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names = {o.name for o in model.graph.output}
    if len(inputs) != 1 or not set(OUTPUTS) <= names:
        raise ModelError(f"{model_path}: not a YuNet model (expected one input and outputs {', '.join(OUTPUTS)})")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"{model_path}: YuNet's input must be NCHW")
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        shape = output.type.tensor_type.shape.dim
        if len(shape) >= 2:
            shape[1].dim_param = "cells"
    return model.SerializeToString()


class YuNetOnnxRuntime:
    """YuNet's forward pass and decoding; :meth:`detect` mirrors ``cv2.FaceDetectorYN.detect``."""

    def __init__(
        self, model_path: Path, *, det_threshold: float, nms_threshold: float, top_k: int, threads: int = 1
    ) -> None:
        from streamd.faces.onnx_engine import ort_session

        self._session = ort_session(model_path, threads=threads, model=dynamic_yunet(model_path))
        self._input = self._session.get_inputs()[0].name
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Faces of a BGR uint8 image as (K, 15) float32 rows, like ``cv2.FaceDetectorYN``; None when none."""
        h, w = image.shape[:2]
        pad_h, pad_w = -(-h // DIVISOR) * DIVISOR, -(-w // DIVISOR) * DIVISOR
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)
        out = dict(zip(OUTPUTS, self._session.run(list(OUTPUTS), {self._input: blob}), strict=True))
        rows = [r for r in (self._decode(out, s, pad_h // s, pad_w // s) for s in STRIDES) if len(r)]
        if not rows:
            return None
        faces = np.concatenate(rows)
        if len(faces) > 1:
            keep = cv2.dnn.NMSBoxes(faces[:, :4].tolist(), faces[:, 14].tolist(), self.det_threshold,
                                    self.nms_threshold, 1.0, self.top_k)
            faces = faces[np.asarray(keep, dtype=np.int64).reshape(-1)]
        return faces if len(faces) else None

    def _decode(self, out: dict[str, Any], stride: int, rows: int, cols: int) -> np.ndarray:
        cls = np.clip(out[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
        obj = np.clip(out[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
        score = np.sqrt(cls * obj)
        idx = np.nonzero(score >= self.det_threshold)[0]
        if not len(idx):
            return np.zeros((0, 15), np.float32)
        r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
        bbox = out[f"bbox_{stride}"].reshape(-1, 4)[idx]
        kps = out[f"kps_{stride}"].reshape(-1, 10)[idx]
        cx, cy = (c + bbox[:, 0]) * stride, (r + bbox[:, 1]) * stride
        bw, bh = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
        faces = np.empty((len(idx), 15), np.float32)
        faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3] = cx - bw / 2, cy - bh / 2, bw, bh
        faces[:, 4:14:2] = (kps[:, 0::2] + c[:, None]) * stride
        faces[:, 5:14:2] = (kps[:, 1::2] + r[:, None]) * stride
        faces[:, 14] = score[idx]
        return faces

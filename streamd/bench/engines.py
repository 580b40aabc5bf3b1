"""`streamd bench engines`: milliseconds per detection and per face embedding, one thread.

Each backend that can be built is timed on the same 1280x720 frame (a real photo, scaled and
padded) after a warm-up; the figure is the median of the repeated runs. OpenCV and onnxruntime
are limited to one thread, so the numbers compare backends rather than the machine's core count.
Backends that cannot be built (package or model file missing) are listed with the reason.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import cv2
import numpy as np

from streamd.errors import StreamdError
from streamd.faces.modelfile import DEV_MODEL_FILES, dev_models_dir, find_dev_model
from streamd.images import read_image
from streamd.settings import (
    DlibDetectorSettings,
    DlibEmbedderSettings,
    OnnxDetectorSettings,
    OnnxEmbedderSettings,
    load_settings,
)

FRAME_SIZE = (1280, 720)
#: The photo used when --image is not given: the insightface demo group photo (6 faces).
DEFAULT_PHOTO = Path("data/faces/group/insightface/t1.jpg")


@dataclass(frozen=True)
class Timing:
    """One backend's figures; ``error`` says why it did not run."""

    backend: str
    kind: str  # "detect" or "embed"
    median_ms: float | None = None
    p90_ms: float | None = None
    faces: int | None = None
    error: str | None = None


def letterbox(image: np.ndarray, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """The image scaled to fit ``size`` (w, h) without distortion, centred on black."""
    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    nw, nh = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    frame = np.zeros((h, w, 3), dtype=np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    frame[y0 : y0 + nh, x0 : x0 + nw] = resized
    return frame


def time_call(fn: Callable[[], Any], *, repeat: int, warmup: int) -> tuple[float, float, Any]:
    """Median and 90th percentile milliseconds of ``fn()`` over ``repeat`` runs after ``warmup``."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return statistics.median(times), p90, result


def _model_option(name: str, dev_name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(
        f"--{name}", name.replace("-", "_").replace(".", "_"), type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help=f"{help_text} [default: ../shared/models/{DEV_MODEL_FILES[dev_name]} when present, else the settings' path]",
    )


def _default_path(given: Path | None, dev_name: str, settings_path: Path) -> Path:
    return given or find_dev_model(dev_name) or settings_path


@click.command("engines")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Photo to time on, scaled/padded to 1280x720 [default: ../shared/data/faces/group/insightface/t1.jpg].")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="streamd settings: their ONNX model paths are the fallback defaults.")
@click.option("--repeat", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per backend.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed runs first.")
@click.option("--input-size", type=click.IntRange(min=64), default=640, show_default=True,
              help="YuNet/SCRFD detection size (longer side).")
@_model_option("yunet", "yunet", "YuNet .onnx.")
@_model_option("scrfd-500m", "scrfd_500m", "SCRFD 500m .onnx.")
@_model_option("scrfd-2.5g", "scrfd_2.5g", "SCRFD 2.5g .onnx.")
@_model_option("mobilefacenet", "mobilefacenet", "ArcFace-style 112x112 recogniser .onnx.")
@click.option("--dlib-cnn/--no-dlib-cnn", default=False, show_default=True, help="Also time dlib's CNN (mmod) detector (slow).")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write the figures as JSON.")
def command(image: Path | None, config: Path | None, repeat: int, warmup: int, input_size: int,
            yunet: Path | None, scrfd_500m: Path | None, scrfd_2_5g: Path | None, mobilefacenet: Path | None,
            dlib_cnn: bool, json_file: Path | None) -> None:
    """Milliseconds per detection on a 1280x720 frame and per face embedding, for each backend.

    One thread (cv2.setNumThreads(1), onnxruntime intra_op_num_threads=1); median of --repeat runs
    after --warmup runs. Run it on a quiet machine.
    """
    from streamd.faces.factory import create_detector, create_embedder

    cv2.setNumThreads(1)
    settings = load_settings(config)
    onnx_det = settings.engine.detector if settings.engine.detector.type == "onnx" else OnnxDetectorSettings()
    onnx_emb = settings.engine.embedder if settings.engine.embedder.type == "onnx" else OnnxEmbedderSettings()

    photo = image or dev_models_dir().parent / DEFAULT_PHOTO
    if not photo.is_file():
        raise click.UsageError(f"{photo}: photo not found; pass --image PHOTO (any photo with faces)")
    frame = letterbox(read_image(photo))

    detectors: list[tuple[str, Callable[[], Any]]] = [
        ("dlib hog", lambda: create_detector(DlibDetectorSettings(model="hog", retry_upsample_below=0))),
    ]
    if dlib_cnn:
        detectors.append(("dlib cnn", lambda: create_detector(DlibDetectorSettings(model="cnn", retry_upsample_below=0))))
    for label, dev, given, model, backend in (
        ("onnx yunet", "yunet", yunet, "yunet", "onnxruntime"),
        ("onnx yunet (opencv)", "yunet", yunet, "yunet", "opencv"),
        ("onnx scrfd 500m", "scrfd_500m", scrfd_500m, "scrfd", "auto"),
        ("onnx scrfd 2.5g", "scrfd_2.5g", scrfd_2_5g, "scrfd", "auto"),
    ):
        path = _default_path(given, dev, onnx_det.model_path)
        detectors.append(
            (label, lambda p=path, m=model, b=backend: create_detector(
                OnnxDetectorSettings(model=m, model_path=p, input_size=input_size, threads=1, yunet_backend=b)))
        )
    emb_path = _default_path(mobilefacenet, "mobilefacenet", onnx_emb.model_path)
    embedders: list[tuple[str, Callable[[], Any]]] = [
        ("onnx mobilefacenet", lambda: create_embedder(
            onnx_emb.model_copy(update={"model_path": emb_path, "threads": 1}))),
        ("dlib resnet", lambda: create_embedder(DlibEmbedderSettings())),
    ]

    timings: list[Timing] = []
    reference_faces: list[Any] = []
    for label, build in detectors:
        try:
            det = build()
        except StreamdError as exc:
            timings.append(Timing(label, "detect", error=str(exc)))
            continue
        med, p90, faces = time_call(lambda d=det: d.detect(frame), repeat=repeat, warmup=warmup)
        timings.append(Timing(label, "detect", med, p90, len(faces)))
        if label == "onnx yunet" or (not reference_faces and faces):
            reference_faces = faces
    face = max(reference_faces, key=lambda f: f.area) if reference_faces else None
    for label, build in embedders:
        if face is None:
            timings.append(Timing(label, "embed", error="no detector found a face to embed"))
            continue
        try:
            emb = build()
        except StreamdError as exc:
            timings.append(Timing(label, "embed", error=str(exc)))
            continue
        med, p90, _ = time_call(lambda e=emb: e.embed(frame, [face]), repeat=repeat, warmup=warmup)
        timings.append(Timing(label, "embed", med, p90, 1))

    click.echo(f"frame: {photo} scaled/padded to {FRAME_SIZE[0]}x{FRAME_SIZE[1]}; one thread; "
               f"median of {repeat} runs after {warmup} warm-up; detection size {input_size} for YuNet/SCRFD")
    click.echo("")
    click.echo(f"  {'backend':<20} {'what':<22} {'median ms':>10} {'p90 ms':>8} {'faces':>6}")
    for t in timings:
        what = "detect 1280x720 frame" if t.kind == "detect" else "embed one face"
        if t.error:
            click.echo(f"  {t.backend:<20} {what:<22} unavailable: {t.error}")
        else:
            click.echo(f"  {t.backend:<20} {what:<22} {t.median_ms:>10.1f} {t.p90_ms:>8.1f} {t.faces:>6}")
    if json_file:
        data = {"image": str(photo), "frame": list(FRAME_SIZE), "repeat": repeat, "warmup": warmup,
                "input_size": input_size, "timings": [t.__dict__ for t in timings]}
        json_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        click.echo(f"figures written to {json_file}")

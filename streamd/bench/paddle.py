"""`streamd bench paddle`: the Paddle engines' speed with oneDNN (MKLDNN) on and off, 1 and 2 threads.

For each engine type (``paddle``: Paddle Inference directly; ``paddlex``: PaddleX's create_model)
and each setting it times: one detection on a 640x640 image (BlazeFace-FPN-SSH's input size, so
no resize happens) and the face feature per face at batch 1 and batch 8 (112x112 chips). Figures
are medians of repeated runs after a warm-up. Legacy exports are copied to a temporary folder in
PaddleX's layout for the ``paddlex`` runs (the source folders are not touched).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import click
import cv2
import numpy as np

from streamd.errors import StreamdError
from streamd.faces.modelfile import dev_models_dir
from streamd.faces.paddle_models import to_paddlex_layout

DET_SIZE = 640
DEV_DET = "blazeface_fpn_ssh_1000e_v1.0_infer"
DEV_REC = "mobileface_v1.0_infer"
#: A photo with several faces among ../shared/data/faces (used when --image is not given).
DEV_PHOTO = Path("data/faces/group/insightface/t1.jpg")


@dataclass(frozen=True)
class PaddleTiming:
    """One engine setting's figures (milliseconds); ``error`` says why it did not run."""

    engine: str
    mkldnn: bool
    threads: int
    detect_ms: float | None = None
    faces: int | None = None
    feature_b1_ms: float | None = None
    feature_b8_ms: float | None = None
    error: str | None = None


def median_ms(fn: Callable[[], Any], *, repeat: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def paddlex_dirs(det_dir: Path, rec_dir: Path, scratch: Path) -> tuple[Path, Path]:
    """The folders as PaddleX reads them: as given when they have inference.yml, else converted copies."""
    det = det_dir if (det_dir / "inference.yml").is_file() else to_paddlex_layout(det_dir, scratch / "det", "BlazeFace-FPN-SSH")
    rec = rec_dir if (rec_dir / "inference.yml").is_file() else to_paddlex_layout(rec_dir, scratch / "rec", "MobileFaceNet")
    return det, rec


def build_engines(kind: str, det_dir: Path, rec_dir: Path, mkldnn: bool, threads: int) -> tuple[Any, Any]:
    """Detector and embedder of engine ``kind`` with the given oneDNN and thread settings."""
    from streamd.faces.paddle_engine import build_detector, build_embedder
    from streamd.settings import (
        PaddleDetectorSettings,
        PaddleEmbedderSettings,
        PaddlexDetectorSettings,
        PaddlexEmbedderSettings,
    )

    runtime = {"mkldnn": mkldnn, "threads": threads}
    if kind == "paddlex":
        det = PaddlexDetectorSettings(model_name="BlazeFace-FPN-SSH", model_dir=det_dir, **runtime)
        rec = PaddlexEmbedderSettings(model_name="MobileFaceNet", model_dir=rec_dir, batch_size=8, **runtime)
    else:
        det = PaddleDetectorSettings(model_dir=det_dir, **runtime)
        rec = PaddleEmbedderSettings(model_dir=rec_dir, batch_size=8, **runtime)
    return build_detector(det), build_embedder(rec)


def time_setting(
    kind: str, det_dir: Path, rec_dir: Path, image: np.ndarray, mkldnn: bool, threads: int, repeat: int, warmup: int
) -> PaddleTiming:
    """Figures for one engine type and setting."""
    try:
        detector, embedder = build_engines(kind, det_dir, rec_dir, mkldnn, threads)
    except StreamdError as exc:
        return PaddleTiming(kind, mkldnn, threads, error=str(exc))
    faces = detector.detect(image)
    detect = median_ms(lambda: detector.detect(image), repeat=repeat, warmup=warmup)
    chip = cv2.resize(image, (112, 112), interpolation=cv2.INTER_AREA)
    one, eight = [chip], [chip] * 8
    b1 = median_ms(lambda: embedder.embed_chips(one), repeat=repeat, warmup=warmup)
    b8 = median_ms(lambda: embedder.embed_chips(eight), repeat=max(3, repeat // 2), warmup=warmup) / 8.0
    return PaddleTiming(kind, mkldnn, threads, detect, len(faces), b1, b8)


def _csv(text: str, cast: Callable[[str], Any]) -> list[Any]:
    return [cast(part.strip()) for part in text.split(",") if part.strip()]


@click.command("paddle")
@click.option("--engine", "engines", type=click.Choice(["paddle", "paddlex"]), multiple=True,
              default=("paddle", "paddlex"), show_default=True, help="Engine types to time (repeatable).")
@click.option("--det-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"BlazeFace-FPN-SSH export (default ../shared/models/{DEV_DET}).")
@click.option("--rec-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"MobileFace export (default ../shared/models/{DEV_REC}).")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Photo resized to 640x640 for detection (default: a group photo in ../shared/data/faces).")
@click.option("--mkldnn", "mkldnn_modes", default="on,off", show_default=True, help="oneDNN settings to time: on, off or on,off.")
@click.option("--threads", "thread_counts", default="1,2", show_default=True, help="Thread counts to time, comma-separated.")
@click.option("--repeat", default=20, show_default=True, help="Timed runs per figure (median reported).")
@click.option("--warmup", default=3, show_default=True, help="Untimed runs first.")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write the figures as JSON.")
def command(engines: tuple[str, ...], det_dir: Path | None, rec_dir: Path | None, image: Path | None,
            mkldnn_modes: str, thread_counts: str, repeat: int, warmup: int, json_file: Path | None) -> None:
    """Milliseconds per detection (640x640) and per face feature (batch 1 and 8) of the Paddle engines."""
    det_dir = det_dir or dev_models_dir() / DEV_DET
    rec_dir = rec_dir or dev_models_dir() / DEV_REC
    photo_path = image or dev_models_dir().parent / DEV_PHOTO
    photo = cv2.imread(str(photo_path))
    if photo is None:
        raise click.BadParameter(f"{photo_path}: not a readable image", param_hint="--image")
    frame = cv2.resize(photo, (DET_SIZE, DET_SIZE), interpolation=cv2.INTER_AREA)
    modes = [m == "on" for m in _csv(mkldnn_modes, str)]
    results: list[PaddleTiming] = []
    with tempfile.TemporaryDirectory(prefix="streamd-bench-paddle-") as scratch:
        for kind in engines:
            dirs = paddlex_dirs(det_dir, rec_dir, Path(scratch)) if kind == "paddlex" else (det_dir, rec_dir)
            for mkldnn in modes:
                for threads in _csv(thread_counts, int):
                    results.append(time_setting(kind, *dirs, frame, mkldnn, threads, repeat, warmup))
    click.echo(f"Paddle engines: BlazeFace-FPN-SSH on {photo_path.name} at {DET_SIZE}x{DET_SIZE}, MobileFace 112x112; "
               f"median of {repeat} runs after {warmup} warm-up")
    click.echo(f"  {'engine':<8} {'oneDNN':<6} {'threads':>7} {'detect ms':>10} {'faces':>6} {'feature b1 ms':>14} {'feature b8 ms/face':>19}")
    for t in results:
        head = f"  {t.engine:<8} {'on' if t.mkldnn else 'off':<6} {t.threads:>7}"
        if t.error:
            click.echo(f"{head}  not run: {t.error}")
        else:
            click.echo(f"{head} {t.detect_ms:>10.1f} {t.faces:>6} {t.feature_b1_ms:>14.2f} {t.feature_b8_ms:>19.2f}")
    if json_file:
        json_file.write_text(json.dumps([asdict(t) for t in results], indent=2) + "\n")

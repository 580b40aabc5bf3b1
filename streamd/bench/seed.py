"""`streamd bench seed`: PaddleX's own face_recognition pipeline against streamd's, on the same frames.

The seed baseline: ``paddlex.create_pipeline`` with a face_recognition config whose sub-modules'
``model_dir`` point at local models, called as ``pipeline.predict(frame, index=...)`` on each frame
of a real clip; then streamd's recognition (``FaceEngine.analyze`` + ``FeatureLibrary.search`` +
the open-set decision) with the same models through the ``paddlex`` engine, on the same frames,
in the same process. Both use the same feature library, built first by streamd from a gallery
(PaddleX reads streamd's library files as they are). Prints frames per second of both and the ratio.

The two models of ../shared/models are legacy exports: they are copied to a temporary folder in
PaddleX's layout, and both sides run them with Paddle's old IR and without oneDNN's conv+activation
fusion (PaddleX's defaults crash on or miscompute them; see docs/paddlex.md).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from streamd.faces.modelfile import dev_models_dir
from streamd.faces.paddle_engine import LEGACY_ONEDNN_SKIP

DEV_CLIP = Path("data/faces/video/faces/ageitgey_short_hamilton_clip.mp4")
DEV_GALLERY = Path("data/faces/identities")
#: The clip's person in the gallery, plus other people so that search has something to reject.
DEV_PEOPLE = ("Alex_Lacamoire",)
DISTRACTORS = 40


def read_frames(path: Path, limit: int) -> list[np.ndarray]:
    """The first ``limit`` decoded frames of a video as BGR arrays (PyAV)."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= limit:
                break
    if not frames:
        raise click.BadParameter(f"{path}: no video frames decoded", param_hint="--video")
    return frames


def gallery_root(identities: Path, people: list[str], scratch: Path) -> Path:
    """A data_root (images/<ID>/) linking the chosen people's folders."""
    root = scratch / "gallery"
    (root / "images").mkdir(parents=True)
    for person in people:
        source = identities / person
        if not source.is_dir():
            raise click.BadParameter(f"{source}: no such identity folder", param_hint="--people")
        (root / "images" / person).symlink_to(source.resolve(), target_is_directory=True)
    return root


def pipeline_config(det_dir: Path, rec_dir: Path, det_threshold: float, rec_threshold: float, topk: int) -> dict[str, Any]:
    """PaddleX's face_recognition pipeline config with the local models."""
    return {
        "pipeline_name": "face_recognition",
        "index": None,
        "det_threshold": det_threshold,
        "rec_threshold": rec_threshold,
        "rec_topk": topk,
        "SubModules": {
            "Detection": {"module_name": "face_detection", "model_name": "BlazeFace-FPN-SSH", "model_dir": str(det_dir), "batch_size": 1},
            "Recognition": {"module_name": "face_feature", "model_name": "MobileFaceNet", "model_dir": str(rec_dir), "batch_size": 1},
        },
    }


def run_paddlex(
    config: dict[str, Any], index_dir: Path, frames: list[np.ndarray], mkldnn: bool, threads: int, patch: bool
) -> dict[str, Any]:
    """PaddleX's pipeline over the frames: fps, faces found and faces named.

    When the pipeline as shipped fails, ``failure`` holds its error; with ``patch`` the run goes
    on with :class:`PerItemFeatures` (and ``patched`` says so), else fps is None.
    """
    from streamd.faces.paddle_engine import import_paddlex

    paddlex = import_paddlex("bench seed", "cpu")
    from paddlex.inference.pipelines.components.faisser import IndexData

    engine_config = {
        "run_mode": "mkldnn" if mkldnn else "paddle",
        "cpu_threads": threads,
        "enable_new_ir": False,
    }
    if mkldnn:
        engine_config["delete_pass"] = list(LEGACY_ONEDNN_SKIP)
    pipeline = paddlex.create_pipeline(config=config, device="cpu", engine_config=engine_config)
    # Loaded once, as a server would; a path would make PaddleX re-read the files on every frame.
    index = IndexData(*_index_parts(IndexData.load(str(index_dir))))
    failure = None
    try:
        list(pipeline.predict(frames[0], index=index))  # warm-up, as PaddleX ships it
    except Exception as exc:  # noqa: BLE001 - reported to the user word for word
        failure = f"{type(exc).__name__}: {exc}"
        if not patch:
            return {"fps": None, "faces": None, "named": None, "failure": failure, "patched": False}
        pipeline.rec_model = PerItemFeatures(pipeline.rec_model)
        list(pipeline.predict(frames[0], index=index))
    faces = 0
    names: Counter[str] = Counter()
    start = time.perf_counter()
    for frame in frames:
        for result in pipeline.predict(frame, index=index):
            for box in result["boxes"]:
                faces += 1
                if box["labels"]:  # None when below rec_threshold
                    names[box["labels"][0]] += 1
    elapsed = time.perf_counter() - start
    return {"fps": len(frames) / elapsed, "faces": faces, "named": sum(names.values()), "names": dict(names),
            "failure": failure, "patched": failure is not None}


class PerItemFeatures:
    """Wraps PaddleX's face_feature predictor so each result holds its own face's vector.

    PaddleX 3.7's image/face feature predictor hands every result of a batch the whole batch's
    (B, D) array, so its face_recognition pipeline passes (N, 1, D) to faiss and fails on the
    first frame with a face. This gives each result its row; nothing else changes.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._batch = int(model.batch_sampler.batch_size)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        from streamd.faces.paddle_engine import own_feature_row

        for i, result in enumerate(self._model(inputs, **kwargs)):
            yield {"feature": own_feature_row(result["feature"], i % self._batch)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _index_parts(loaded: tuple[Any, Any, Any, Any]) -> tuple[Any, dict[str, Any]]:
    index, id_map, metric_type, index_type = loaded
    return index, {"id_map": id_map, "metric_type": metric_type, "index_type": index_type}


def run_streamd(engine: Any, library: Any, frames: list[np.ndarray], threshold: float, margin: float, topk: int) -> dict[str, Any]:
    """streamd's recognition over the frames: fps, faces found and faces named."""
    from streamd.index.decision import decide

    names: Counter[str] = Counter()

    def recognise(frame: np.ndarray) -> int:
        results = engine.analyze(frame)
        vectors = [r.vector for r in results if r.vector is not None]
        hits = library.search(np.stack(vectors), topk) if vectors else []
        for h in hits:
            label = decide(h, threshold, margin).label
            if label is not None:
                names[label] += 1
        return len(results)

    recognise(frames[0])  # warm-up
    names.clear()
    faces = 0
    start = time.perf_counter()
    for frame in frames:
        faces += recognise(frame)
    elapsed = time.perf_counter() - start
    return {"fps": len(frames) / elapsed, "faces": faces, "named": sum(names.values()), "names": dict(names)}


@click.command("seed")
@click.option("--video", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Clip to run on (default: the Hamilton clip in ../shared/data/faces/video/faces).")
@click.option("--frames", "frame_count", default=100, show_default=True, help="Frames decoded and run through both.")
@click.option("--det-dir", type=click.Path(path_type=Path, file_okay=False), default=None, help="BlazeFace-FPN-SSH export (default: ../shared/models).")
@click.option("--rec-dir", type=click.Path(path_type=Path, file_okay=False), default=None, help="MobileFace export (default: ../shared/models).")
@click.option("--identities", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="<ID>/*.jpg folder the gallery is taken from (default: ../shared/data/faces/identities).")
@click.option("--people", default=None, help="Comma-separated IDs to enrol (default: Alex_Lacamoire and 40 others).")
@click.option("--mkldnn/--no-mkldnn", default=True, show_default=True, help="oneDNN kernels on both sides.")
@click.option("--threads", default=1, show_default=True, help="CPU threads per model on both sides.")
@click.option("--pad-small/--no-pad-small", default=True, show_default=True,
              help="streamd's detector pads frames smaller than 640x640 instead of stretching them (PaddleX stretches).")
@click.option("--landmarks", type=click.Choice(["none", "yunet"]), default="none", show_default=True,
              help="streamd aligns faces with YuNet's landmarks (yunet) or cuts them from the box as PaddleX does (none).")
@click.option("--patch-paddlex/--no-patch-paddlex", "patch", default=True, show_default=True,
              help="When PaddleX's pipeline fails on its batched face features (PaddleX 3.7), report the error "
              "and time it with each face's own feature row passed on.")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write the figures as JSON.")
def command(video: Path | None, frame_count: int, det_dir: Path | None, rec_dir: Path | None, identities: Path | None,
            people: str | None, mkldnn: bool, threads: int, pad_small: bool, landmarks: str, patch: bool,
            json_file: Path | None) -> None:
    """Frames per second of PaddleX's face_recognition pipeline and of streamd's, same models and frames."""
    from streamd.bench.paddle import paddlex_dirs
    from streamd.faces.engine import FaceEngine
    from streamd.index.builder import build_index
    from streamd.settings import EngineSettings, IndexSettings

    shared = dev_models_dir().parent
    video = video or shared / DEV_CLIP
    identities = identities or shared / DEV_GALLERY
    chosen = [p.strip() for p in people.split(",")] if people else _default_people(identities)
    index_settings = IndexSettings(rec_threshold=0.4, rec_topk=5)  # PaddleX's pipeline defaults
    det_threshold = 0.6
    frames = read_frames(video, frame_count)
    with tempfile.TemporaryDirectory(prefix="streamd-bench-seed-") as tmp:
        scratch = Path(tmp)
        det, rec = paddlex_dirs(det_dir or dev_models_dir() / "blazeface_fpn_ssh_1000e_v1.0_infer",
                                rec_dir or dev_models_dir() / "mobileface_v1.0_infer", scratch)
        runtime = {"mkldnn": mkldnn, "threads": threads}
        engine_settings = EngineSettings.model_validate({
            "detector": {"type": "paddlex", "model_name": "BlazeFace-FPN-SSH", "model_dir": det,
                         "det_threshold": det_threshold, "pad_small": pad_small, **runtime, **_landmarks(landmarks)},
            "embedder": {"type": "paddlex", "model_name": "MobileFaceNet", "model_dir": rec, **runtime},
        })
        engine = FaceEngine.from_settings(engine_settings)
        summary = build_index(engine, gallery_root(identities, chosen, scratch), scratch / "index")
        click.echo(f"gallery: {len(chosen)} people, {len(summary.ids)} faces enrolled; clip {video.name}: {len(frames)} frames "
                   f"{frames[0].shape[1]}x{frames[0].shape[0]}; BlazeFace-FPN-SSH + MobileFace, oneDNN {'on' if mkldnn else 'off'}, "
                   f"{threads} thread(s); streamd: pad_small {'on' if pad_small else 'off'}, landmarks {landmarks}")
        theirs = run_paddlex(pipeline_config(det, rec, det_threshold, index_settings.rec_threshold, index_settings.rec_topk),
                             scratch / "index", frames, mkldnn, threads, patch)
        ours = run_streamd(engine, summary.library, frames, index_settings.rec_threshold, index_settings.margin, index_settings.rec_topk)
    if theirs["failure"]:
        click.echo(f"  PaddleX's pipeline as shipped fails on the first frame with a face: {theirs['failure']}")
        click.echo("  (its face_feature results each carry the whole batch's (B, D) array, so faiss gets (N, 1, D))")
    ratio = ours["fps"] / theirs["fps"] if theirs["fps"] else None
    label = "PaddleX predict" + (" (rows fixed)" if theirs["patched"] else "")
    click.echo(f"  {'':<34} {'fps':>7} {'faces':>6} {'named':>6}")
    if theirs["fps"] is not None:
        click.echo(f"  {label:<34} {theirs['fps']:>7.2f} {theirs['faces']:>6} {theirs['named']:>6}")
    click.echo(f"  {'streamd analyze + search':<34} {ours['fps']:>7.2f} {ours['faces']:>6} {ours['named']:>6}")
    if ratio is not None:
        click.echo(f"  streamd / PaddleX: {ratio:.2f}x")
    for who, figures in (("PaddleX", theirs), ("streamd", ours)):
        top = ", ".join(f"{name} {count}" for name, count in Counter(figures.get("names") or {}).most_common(3))
        click.echo(f"  names given by {who}: {top or 'none'}")
    if json_file:
        json_file.write_text(json.dumps({"paddlex": theirs, "streamd": ours, "ratio": ratio, "frames": len(frames)}, indent=2) + "\n")


def _landmarks(kind: str) -> dict[str, Any]:
    if kind == "none":
        return {}
    return {"landmarks": "yunet", "landmarks_model": dev_models_dir() / "yunet_2023mar" / "face_detection_yunet_2023mar.onnx"}


def _default_people(identities: Path) -> list[str]:
    others = sorted(p.name for p in identities.iterdir() if p.is_dir() and p.name not in DEV_PEOPLE)
    return list(DEV_PEOPLE) + others[:DISTRACTORS]

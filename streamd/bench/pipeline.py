"""`streamd bench pipeline`: how many cameras one machine recognises in real time, and how well.

The clips are made from real faces (``--faces-dir``, default ``../shared/data/faces``): 1280x720
H.264 at 25 fps with a keyframe every ``--gop`` frames, one to three people in view, enrolled
and never-enrolled (see :mod:`streamd.bench.scenes`), cast from the ``--half`` of the identities
(:mod:`streamd.eval.split`; by default the report half, people the defaults were never tuned on).
Every trial runs in a fresh process (:mod:`streamd.bench.pipeline_trial`) while the command prints:

- capacity: the most concurrent streams the daemon keeps up with (>= 95 % of the sampled frames
  recognised, decoding not falling behind the clips' clock), found by doubling then bisecting;
  the same for the naive loop (one thread, OpenCV decoding every frame, every face embedded),
  and the ratio of the two, measured in the same run;
- frame-to-decision latency at one stream; CPU and resident memory, and memory per stream;
- keyframe-only decoding: its capacity and what it samples (with a 25-frame GOP, 1 frame/s);
- accuracy and time to identify: every clip played once, each track scored against the truth;
- worker modes: frames/s of the recognition pool alone with threads and with processes.

Real-time pacing matters: clips are read at their own frame rate like live cameras, so falling
behind shows as lag and drops rather than as a longer run. Run it on a quiet machine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from streamd.bench.pipeline_trial import TrialReport, TrialSpec
from streamd.bench.scoring import Accuracy, merge
from streamd.eval.split import HALVES

DEFAULT_WORK_DIR = Path.home() / ".cache" / "streamd" / "bench-pipeline"
#: People in the benchmark's cast; the scenes cycle through them.
ENROLLED, STRANGERS = 12, 6
TARGETS = {"capacity": 8, "ratio": 3.0, "latency_p95_ms": 250.0, "time_to_identify_s": 1.0, "accuracy": 0.98}


def shared_dir() -> Path:
    """``../shared`` beside the working directory (the layout of a development checkout)."""
    return Path.cwd().parent / "shared"


def data_dirs(models_dir: Path | None, faces_dir: Path | None) -> tuple[Path, Path]:
    """The models and face-data folders a benchmark uses (default: ../shared's), checked for identities/."""
    models_dir = models_dir or (shared_dir() / "models")
    faces_dir = faces_dir or (shared_dir() / "data" / "faces")
    if not (faces_dir / "identities").is_dir():
        raise click.UsageError(f"--faces-dir {faces_dir}: no identities/ folder of face photos there")
    return models_dir, faces_dir


#: Recognisers the onnx engine is benchmarked with, by ``--recogniser``: the folder in
#: ``--models-dir`` and the embedder settings (preprocessing) of each.
RECOGNISERS: dict[str, tuple[str, dict[str, Any]]] = {
    # insightface/PaddlePaddle MobileFaceNet (Paddle inference model), converted to ONNX on first use.
    "mobileface-paddle": ("mobileface_v1.0_infer", {"mean": 127.5, "std": 127.5, "color": "RGB"}),
    # MobileFaceNet from foamliu's PyTorch training, as ONNX.
    "mobilefacenet-foamliu": ("mobilefacenet_foamliu/MobileFaceNet.onnx", {"mean": 127.5, "std": 128.0, "color": "RGB"}),
}
DEFAULT_RECOGNISER = "mobileface-paddle"


def engine_settings(
    engine: str, models_dir: Path | None, recogniser: str = DEFAULT_RECOGNISER, work_dir: Path | None = None
) -> dict[str, Any]:
    """The ``engine:`` settings of the benchmarked engine.

    A Paddle recogniser is converted to ONNX (:mod:`streamd.faces.convert`) into ``work_dir``
    once, named by its weights' digest.
    """
    if engine == "dlib":
        return {"detector": {"type": "dlib"}, "embedder": {"type": "dlib"}}
    from streamd.faces.modelfile import DEV_MODEL_FILES

    folder, preprocessing = RECOGNISERS[recogniser]
    source = models_dir / folder if models_dir is not None else None
    if source is None or not (models_dir / DEV_MODEL_FILES["yunet"]).exists() or not source.exists():
        raise click.UsageError(
            f"--models-dir {models_dir}: YuNet and the recogniser not found (expected "
            f"{DEV_MODEL_FILES['yunet']} and {folder} inside)"
        )
    model_path = source if source.is_file() else converted_model(source, (work_dir or DEFAULT_WORK_DIR) / "models")
    return {
        "detector": {"type": "onnx", "model": "yunet", "model_path": str(models_dir / DEV_MODEL_FILES["yunet"])},
        "embedder": {"type": "onnx", "model_path": str(model_path), **preprocessing},
    }


def converted_model(paddle_dir: Path, out_dir: Path) -> Path:
    """``paddle_dir`` converted to ONNX in ``out_dir`` (cached by the weights' sha256)."""
    from streamd.faces.convert import convert_paddle_model
    from streamd.faces.modelfile import file_sha256

    target = out_dir / f"{paddle_dir.name}-{file_sha256(paddle_dir / 'inference.pdiparams')[:12]}.onnx"
    if not target.is_file():
        click.echo(f"converting {paddle_dir} to {target} ...")
        convert_paddle_model(paddle_dir, target)
    return target


# --------------------------------------------------------------------------- preparation


def prepare(
    engine: dict[str, Any], faces_dir: Path, work_dir: Path, *, clips: int, seconds: float, gop: int, seed: int,
    echo: Callable[[str], None], half: str = "report",
) -> tuple[str, list[str]]:
    """The index built from the cast's gallery with ``engine``, and the clips' truth files (cached).

    The cast comes from ``half`` of the identities (:mod:`streamd.eval.split`).
    """
    from streamd.bench.scenes import load_truth, pick_cast, render_scene, save_truth, wall_image, write_gallery
    from streamd.faces.engine import FaceEngine
    from streamd.index.builder import build_index
    from streamd.settings import EngineSettings

    work_dir.mkdir(parents=True, exist_ok=True)
    face_engine = FaceEngine.from_settings(EngineSettings(**engine))
    roles = pick_cast(faces_dir / "identities", enrolled=ENROLLED, strangers=STRANGERS, seed=seed,
                      half=half)  # type: ignore[arg-type]
    gallery = work_dir / f"gallery-{half}-{seed}"
    if not gallery.exists():
        write_gallery(roles, gallery)
    # Named by the engine's whole fingerprint (model digests, preprocessing): two recognisers of
    # one kind and size must not share an index.
    digest = hashlib.sha256(face_engine.fingerprint.encode()).hexdigest()[:10]
    index_dir = work_dir / f"index-{half}-{seed}-{face_engine.fingerprint.split(':')[0]}-{face_engine.dim}-{digest}"
    if not (index_dir / "vector.index").exists():
        echo(f"building the index in {index_dir} ...")
        build_index(face_engine, gallery, index_dir)
    truths = []
    for k in range(clips):
        name = f"scene-{half}-{seed}-{k}-{seconds:g}s-gop{gop}"
        truth = work_dir / f"{name}.json"
        if not truth.exists() or not load_truth(truth).path.exists():
            echo(f"rendering {name}.mp4 ...")
            clip = render_scene(roles, work_dir / f"{name}.mp4", face_engine.detector.detect,
                                wall=wall_image(faces_dir), seconds=seconds, gop=gop, seed=seed * 100 + k)
            save_truth(clip, truth)
        truths.append(str(truth))
    return str(index_dir), truths


# --------------------------------------------------------------------------- trials


def run_trial(spec: TrialSpec, timeout: float | None = None) -> TrialReport:
    """Run one trial in a fresh process; its report (an error report when it failed)."""
    limit = timeout or (spec.warmup_s + spec.duration_s + 240.0)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamd.bench.pipeline_trial", json.dumps(asdict(spec))],
            capture_output=True, text=True, timeout=limit,
        )
    except subprocess.TimeoutExpired:
        return TrialReport(spec.kind, spec.streams, error=f"no answer within {limit:g} s")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return TrialReport(spec.kind, spec.streams, error=f"exit {done.returncode}: {tail}")
    data = json.loads(lines[-1])
    return TrialReport(**data)


def describe(r: TrialReport) -> str:
    if r.error:
        return f"{r.streams:>3} streams: failed: {r.error}"
    lat = f", latency p50 {r.latency_p50_ms:.0f} ms p95 {r.latency_p95_ms:.0f} ms" if r.latency_p95_ms is not None else ""
    return (
        f"{r.streams:>3} streams: {'keeps up ' if r.keeps_up else 'FALLS BEHIND'} recognised {r.processed}/"
        f"{r.expected:.0f} ({100 * r.processed_share:.0f} %), dropped {r.dropped}, lag growth {r.lag_growth_s:+.2f} s"
        f"{lat}, faces embedded {r.faces_embedded}/{r.faces_detected}"
        f"{'' if r.detect_coverage is None else f', detection looked at {100 * r.detect_coverage:.0f} % of the pixels'}"
        f", CPU {r.cpu_cores:.2f} cores, "
        f"RSS {r.rss_mib:.0f} MiB"
    )


def find_capacity(
    trial: Callable[[int], TrialReport], max_streams: int, echo: Callable[[str], None]
) -> tuple[int, dict[int, TrialReport]]:
    """The most streams that keep up (doubling, then bisecting), and every trial run."""
    runs: dict[int, TrialReport] = {}

    def ok(n: int) -> bool:
        if n not in runs:
            runs[n] = trial(n)
            echo("  " + describe(runs[n]))
        return runs[n].keeps_up

    if not ok(1):
        return 0, runs
    good, bad = 1, None
    while bad is None and good < max_streams:
        n = min(good * 2, max_streams)
        if ok(n):
            good = n
        else:
            bad = n
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good, runs


def memory_per_stream(runs: dict[int, TrialReport]) -> float | None:
    """Resident memory added per stream: the slope between the smallest and largest run that kept up."""
    kept = sorted(n for n, r in runs.items() if r.keeps_up)
    if len(kept) < 2:
        return None
    a, b = kept[0], kept[-1]
    return (runs[b].rss_mib - runs[a].rss_mib) / (b - a)


def at_least(capacity: int, runs: dict[int, TrialReport]) -> str:
    """``">= "`` when the search stopped at its limit with every run keeping up (the real figure is higher)."""
    return ">= " if runs and capacity == max(runs) and runs[capacity].keeps_up else ""


def cpu_per_stream(report: TrialReport) -> float:
    """Milliseconds of CPU per second of video, per stream."""
    return 1000.0 * report.cpu_cores / max(1, report.streams)


def _mark(ok: bool) -> str:
    return "meets target" if ok else "BELOW TARGET"


# --------------------------------------------------------------------------- command


@click.command("pipeline")
@click.option("--engine", type=click.Choice(["onnx", "dlib"]), default="onnx", show_default=True,
              help="onnx: YuNet + MobileFaceNet from --models-dir; dlib: HOG + ResNet (face_recognition_models).")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder laid out like ../shared/models (default: ../shared/models when present).")
@click.option("--faces-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Face data laid out like ../shared/data/faces: identities/<name>/*.jpg and "
              "negatives/skimage/brick.png (default: ../shared/data/faces when present).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_WORK_DIR,
              show_default=True, help="Where clips, gallery and index are made and cached.")
@click.option("--clips", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Different scenes; stream i plays scene i mod clips.")
@click.option("--clip-seconds", type=click.FloatRange(5, 600), default=30.0, show_default=True)
@click.option("--gop", type=click.IntRange(1, 250), default=25, show_default=True, help="Keyframe interval in frames.")
@click.option("--sample-fps", type=click.FloatRange(0.1, 25), default=5.0, show_default=True)
@click.option("--duration", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
              help="Seconds each capacity trial is measured, after --warmup.")
@click.option("--warmup", type=click.FloatRange(0, 600), default=5.0, show_default=True)
@click.option("--max-streams", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--streams", "fixed", type=str, help="Comma-separated stream counts to run instead of searching.")
@click.option("--worker-mode", type=click.Choice(["auto", "threads", "processes"]), default="auto", show_default=True,
              help="pipeline.worker_mode of the daemon (auto: processes for dlib and onnx).")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True, help="0 = one per core.")
@click.option("--batch-frames", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--snapshots/--no-snapshots", default=True, show_default=True,
              help="Keep track snapshots as the daemon does by default (JPEG writes of faces and frames).")
@click.option("--recogniser", type=click.Choice(sorted(RECOGNISERS)), default=DEFAULT_RECOGNISER, show_default=True,
              help="The onnx engine's MobileFaceNet: the insightface/PaddlePaddle one (from mobileface_v1.0_infer, "
                   "converted to ONNX; needs the convert extra) or foamliu's.")
@click.option("--region-detection/--no-region-detection", default=True, show_default=True,
              help="pipeline.region_detection.enabled of the daemon: detect around tracks and motion, the whole "
              "frame once a second (the default), or the whole frame on every sample.")
@click.option("--skip", multiple=True, type=click.Choice(["capacity", "naive", "keyframes", "accuracy", "modes"]),
              help="Leave out a part (repeatable).")
@click.option("--seed", type=int, default=1, show_default=True, help="Chooses the cast and the scenes.")
@click.option("--half", type=click.Choice(HALVES), default="report", show_default=True,
              help="Which half of the identities the cast comes from (streamd.eval.split): report = people the "
                   "defaults were never tuned on; all = every folder, as before the split.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write every figure to this JSON file.")
def command(
    engine: str, models_dir: Path | None, faces_dir: Path | None, work_dir: Path, clips: int, clip_seconds: float,
    gop: int, sample_fps: float, duration: float, warmup: float, max_streams: int, fixed: str | None,
    worker_mode: str, workers: int, batch_frames: int, snapshots: bool, recogniser: str, region_detection: bool,
    skip: tuple[str, ...], seed: int, half: str, json_out: Path | None,
) -> None:
    """Capacity, latency, time to identify and accuracy of the stream pipeline (real time, real faces)."""
    echo = click.echo
    models_dir, faces_dir = data_dirs(models_dir, faces_dir)
    eng = engine_settings(engine, models_dir if engine == "onnx" else None, recogniser, work_dir)
    index_dir, truths = prepare(eng, faces_dir, work_dir, clips=clips, seconds=clip_seconds, gop=gop, seed=seed,
                                echo=echo, half=half)
    base = TrialSpec(kind="streamd", engine=eng, index_dir=index_dir, clips=truths, streams=1, duration_s=duration,
                     warmup_s=warmup, sample_fps=sample_fps, worker_mode=worker_mode, workers=workers,
                     batch_frames=batch_frames, snapshots=snapshots, region_detection=region_detection,
                     work_dir=str(work_dir))
    out: dict[str, Any] = {"engine": engine, "recogniser": recogniser if engine == "onnx" else None, "half": half,
                           "gop": gop,
                           "sample_fps": sample_fps, "clips": truths}
    started = time.monotonic()
    described = f"{engine} ({recogniser})" if engine == "onnx" else engine
    echo(f"engine {described}, {clips} clip(s) of {clip_seconds:g} s, 1280x720 H.264 25 fps, GOP {gop}, "
         f"{sample_fps:g} sampled frames/s per stream; {worker_mode}, workers={workers or 'cores'}; cast from the "
         f"{half} half of {faces_dir / 'identities'}")

    def trials(spec: TrialSpec, title: str, limit: int = max_streams) -> tuple[int, dict[int, TrialReport]]:
        echo(title)
        if fixed:
            runs = {}
            for n in (int(x) for x in fixed.split(",")):
                runs[n] = run_trial(replace(spec, streams=n))
                echo("  " + describe(runs[n]))
            return max((n for n, r in runs.items() if r.keeps_up), default=0), runs
        return find_capacity(lambda n: run_trial(replace(spec, streams=n)), limit, echo)

    capacity, runs = (0, {}) if "capacity" in skip else trials(base, "streamd, decoding every frame (decode: auto):")
    if runs:
        out["capacity"] = {"streams": capacity, "runs": {n: asdict(r) for n, r in runs.items()}}
    one = runs.get(1)
    per_stream = memory_per_stream(runs)
    if "naive" not in skip:
        naive_cap, naive_runs = trials(replace(base, kind="naive"), "naive loop (one thread, OpenCV decodes every frame):")
        out["naive"] = {"streams": naive_cap, "runs": {n: asdict(r) for n, r in naive_runs.items()}}
    if "keyframes" not in skip:
        # Keyframe-only decoding is several times cheaper per stream: search further.
        kf_cap, kf_runs = trials(replace(base, decode="keyframes"),
                                 f"streamd, keyframes only (samples {min(sample_fps, 25 / gop):g} frame/s per stream):",
                                 max_streams * 3)
        out["keyframes"] = {"streams": kf_cap, "runs": {n: asdict(r) for n, r in kf_runs.items()}}
    if "accuracy" not in skip:
        # Every clip played once, at most as many at a time as the daemon keeps up with.
        at_once = max(1, min(clips, capacity)) if runs else clips
        echo(f"accuracy: {clips} clip(s) played once, {at_once} at a time:")
        parts = []
        for start in range(0, clips, at_once):
            group = truths[start : start + at_once]
            acc = run_trial(replace(base, clips=group, streams=len(group), loop=False, warmup_s=0.0))
            echo("  " + describe(acc))
            if acc.accuracy_figures:
                parts.append(Accuracy(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in acc.accuracy_figures.items()}))
        merged = merge(parts)
        for line in merged.lines():
            echo("  " + line)
        out["accuracy"] = asdict(merged)
    if "modes" not in skip:
        echo("recognition pool alone (frames from memory, 4 cameras, as fast as it goes):")
        out["modes"] = {}
        for mode, n in (("threads", 1), ("threads", 0), ("processes", 0)):
            spec = replace(base, kind="throughput", streams=4, duration_s=10.0, worker_mode=mode, workers=n)
            r = run_trial(spec, timeout=600)
            label = f"{mode} x {n or 'cores'}"
            echo(f"  {label:<16} " + (f"failed: {r.error}" if r.error else
                 f"{r.frames_per_s:6.1f} frames/s, CPU {r.cpu_cores:.2f} cores, RSS {r.rss_mib:.0f} MiB"))
            out["modes"][label] = asdict(r)

    echo("summary:")
    if runs:
        echo(f"  capacity: {at_least(capacity, runs)}{capacity} streams (target >= {TARGETS['capacity']}: "
             f"{_mark(capacity >= TARGETS['capacity'])})")
    if runs and capacity:
        echo(f"  CPU per stream at capacity: {cpu_per_stream(runs[capacity]):.0f} ms of CPU per second")
    if "naive" in out and runs:
        naive_cap = out["naive"]["streams"]
        if naive_cap:
            ratio = capacity / naive_cap
            out["ratio"] = ratio
            echo(f"  naive loop: {naive_cap} streams; ratio {at_least(capacity, runs)}{ratio:.1f}x "
                 f"(target >= {TARGETS['ratio']:g}x: {_mark(ratio >= TARGETS['ratio'])})")
        else:
            echo(f"  naive loop: cannot keep up with one stream; streamd keeps up with {capacity}")
        naive_run = naive_runs.get(naive_cap)
        if naive_run is not None:
            echo(f"  naive CPU per stream at its capacity: {cpu_per_stream(naive_run):.0f} ms of CPU per second")
    if "keyframes" in out:
        echo(f"  keyframes only: {at_least(kf_cap, kf_runs)}{kf_cap} streams at {min(sample_fps, 25 / gop):g} "
             "frame/s each")
    if one is not None and one.latency_p95_ms is not None:
        echo(f"  frame-to-decision at 1 stream: p50 {one.latency_p50_ms:.0f} ms, p95 {one.latency_p95_ms:.0f} ms "
             f"(target p95 <= {TARGETS['latency_p95_ms']:g} ms: {_mark(one.latency_p95_ms <= TARGETS['latency_p95_ms'])})")
    if "accuracy" in out:
        tti = merged.median_time_to_identify
        if tti is not None:
            echo(f"  time to identify: median {tti:.2f} s (target <= {TARGETS['time_to_identify_s']:g} s: "
                 f"{_mark(tti <= TARGETS['time_to_identify_s'])})")
        if merged.enrolled_tracks:
            ok = merged.correct_share >= TARGETS["accuracy"] and merged.strangers_named == 0
            echo(f"  accuracy: {100 * merged.correct_share:.1f} % of enrolled tracks named correctly, "
                 f"{merged.strangers_named} never-enrolled track(s) named ({_mark(ok)})")
    if per_stream is not None:
        echo(f"  resident memory per stream: {per_stream:.0f} MiB")
    echo(f"  ({time.monotonic() - started:.0f} s)")
    if json_out is not None:
        json_out.write_text(json.dumps(out, indent=1, default=str))

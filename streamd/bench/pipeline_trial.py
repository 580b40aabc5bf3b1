"""One measured run of ``streamd bench pipeline``, in a process of its own.

Each trial runs in a fresh Python process (``python -m streamd.bench.pipeline_trial SPEC_JSON``,
printing a JSON report as its last line) so that its memory figure starts from nothing and no
thread or engine of an earlier trial competes with it. Kinds:

- ``streamd``: the daemon (``App``, HTTP and MQTT off) on N looped clips played in real time;
  counts the sampled frames recognised in a measuring window, the queue drops, how far decoding
  falls behind the clips' clock, frame-to-decision latency, CPU and memory. Without ``loop``,
  every clip is played once and the run's tracks are scored against the truth.
- ``naive``: the loop a first attempt would write, on the same clips and engine: one thread,
  OpenCV ``VideoCapture`` decoding every frame (one decoder thread), and on every sampled frame
  detection, embedding of every face and an index search. It never drops; it falls behind.
- ``throughput``: the recognition pool alone (no decoding): sampled frames held in memory are
  pushed through ``RecognitionPipeline`` as fast as it takes them, to compare worker modes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: A run keeps up when it recognises at least this share of the frames it should have sampled ...
MIN_PROCESSED_SHARE = 0.95
#: ... and decoding falls no further behind the clip's clock than this over the window.
MAX_LAG_GROWTH_S = 0.5


@dataclass(frozen=True)
class TrialSpec:
    """What to run. ``engine`` is an ``engine:`` settings mapping; ``clips`` are truth JSON files."""

    kind: str
    engine: dict[str, Any]
    index_dir: str
    clips: list[str]
    streams: int
    duration_s: float = 30.0
    warmup_s: float = 5.0
    sample_fps: float = 5.0
    decode: str = "auto"
    loop: bool = True
    worker_mode: str = "auto"
    workers: int = 0
    batch_frames: int = 4
    snapshots: bool = True
    region_detection: bool = True
    work_dir: str = ""


@dataclass
class TrialReport:
    """What a trial measured (times in seconds unless the name says ms; memory in MiB)."""

    kind: str
    streams: int
    window_s: float = 0.0
    expected: float = 0.0
    processed: int = 0
    dropped: int = 0
    faces_detected: int = 0
    faces_embedded: int = 0
    #: Mean share of each sample's pixels that detection looked at (1.0: every sample whole).
    detect_coverage: float | None = None
    lag_growth_s: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    cpu_cores: float = 0.0
    rss_mib: float = 0.0
    frames_per_s: float = 0.0
    decode_modes: list[str] = field(default_factory=list)
    accuracy: list[str] = field(default_factory=list)
    accuracy_figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def processed_share(self) -> float:
        return self.processed / self.expected if self.expected else 0.0

    @property
    def keeps_up(self) -> bool:
        return self.error is None and self.processed_share >= MIN_PROCESSED_SHARE and self.lag_growth_s <= MAX_LAG_GROWTH_S


def _children() -> dict[int, list[str]]:
    """This process's running children (the worker processes of worker_mode processes): pid -> the
    fields of ``/proc/<pid>/stat`` after the command name."""
    me, found = os.getpid(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid
            found[int(entry)] = fields
    return found


def _vm_rss_mib(pid: int | str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def rss_mib() -> float:
    """Resident memory of this process and its running children, summed (shared library pages count
    once per process, so with worker processes this is an upper bound)."""
    return _vm_rss_mib("self") + sum(_vm_rss_mib(pid) for pid in _children())


def cpu_seconds() -> float:
    """CPU time of this process and of its running children (the worker processes of worker_mode processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    # utime + stime of each child
    return time.process_time() + sum((int(f[11]) + int(f[12])) / tick for f in _children().values())


def _quantile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000.0 * ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _lag_growth(points: list[tuple[float, float]]) -> float:
    """How much later the last frames came than the first, against the clip's clock (captured_at, pts)."""
    if len(points) < 4:
        return 0.0
    points.sort(key=lambda p: p[1])
    k = max(2, len(points) // 10)
    lag = [wall - pts for wall, pts in points]
    return statistics.median(lag[-k:]) - statistics.median(lag[:k])


# --------------------------------------------------------------------------- streamd


def _settings(spec: TrialSpec, cameras: list[dict[str, Any]], snapshots: Path) -> Any:
    from streamd.settings import Settings

    return Settings(
        engine=spec.engine,
        index={"dir": spec.index_dir, "watch": False},
        mqtt={"enabled": False},
        http={"enabled": False},
        snapshots={"dir": str(snapshots), "enabled": spec.snapshots},
        pipeline={"workers": spec.workers, "worker_mode": spec.worker_mode, "batch_frames": spec.batch_frames,
                  "region_detection": {"enabled": spec.region_detection}},
        cameras=cameras,
    )


def run_streamd(spec: TrialSpec) -> TrialReport:
    """The daemon on ``spec.streams`` clips (see the module docstring)."""
    from streamd.app import App
    from streamd.bench.scenes import load_truth
    from streamd.metrics import Metrics
    from streamd.pipeline.camera import FrameResult

    clips = [load_truth(Path(p)) for p in spec.clips]
    cams = {f"cam{i:02d}": clips[i % len(clips)] for i in range(spec.streams)}
    cameras = [
        {"name": name, "url": str(clip.path), "loop": spec.loop, "realtime": True,
         "sample_fps": spec.sample_fps, "decode": spec.decode}
        for name, clip in cams.items()
    ]
    results: list[FrameResult] = []
    events: list[Any] = []
    lock = threading.Lock()

    def on_result(result: FrameResult) -> None:
        with lock:
            results.append(result)

    snapshots = Path(tempfile.mkdtemp(prefix="snapshots-", dir=spec.work_dir or None))
    metrics = Metrics()
    settings = _settings(spec, cameras, snapshots)
    app = App.from_settings(settings.model_copy(update={"cameras": []}), metrics=metrics, on_event=events.append,
                            on_result=on_result)
    report = TrialReport(spec.kind, spec.streams)
    try:
        app.start()
        # Cameras are not synchronised: start them spread over one keyframe interval, so that their
        # samples and keyframes do not all arrive in the same instant (a burst no real site sees).
        spread = clips[0].gop / clips[0].fps
        for k in range(1, len(cameras) + 1):
            app.apply_cameras(settings.cameras[:k])
            time.sleep(spread / len(cameras))
        if spec.loop:
            time.sleep(spec.warmup_s)
            t0, cpu0, dropped0, faces0 = time.time(), cpu_seconds(), _dropped(metrics, cams), _counts(metrics, cams)
            time.sleep(spec.duration_s)
            t1, cpu1, dropped1, faces1 = time.time(), cpu_seconds(), _dropped(metrics, cams), _counts(metrics, cams)
        else:
            t0, cpu0, dropped0, faces0 = time.time(), cpu_seconds(), 0, (0.0, 0.0, 0.0, 0.0)
            longest = max(c.duration_s for c in clips)
            deadline = t0 + longest + spec.warmup_s + 10.0
            while time.time() < deadline and any(s.status != "ended" for s in app.camera_states()):
                time.sleep(0.2)
            t1, cpu1, dropped1, faces1 = time.time(), cpu_seconds(), _dropped(metrics, cams), _counts(metrics, cams)
        report.rss_mib = rss_mib()
        report.decode_modes = sorted({str(s.mode) for s in app.camera_states()})
    finally:
        app.stop(30.0)
        shutil.rmtree(snapshots, ignore_errors=True)
    with lock:
        window = [r for r in results if t0 <= r.captured_at < t1]
    report.window_s = t1 - t0
    rate = spec.sample_fps if spec.decode != "keyframes" else min(spec.sample_fps, clips[0].fps / clips[0].gop)
    report.expected = rate * report.window_s * spec.streams if spec.loop else sum(
        c.duration_s * rate for c in cams.values())
    report.processed = len(window)
    report.dropped = int(dropped1 - dropped0)
    detected, embedded, coverage, detections = (b - a for a, b in zip(faces0, faces1))
    report.faces_detected, report.faces_embedded = int(detected), int(embedded)
    report.detect_coverage = coverage / detections if detections else None
    report.cpu_cores = (cpu1 - cpu0) / max(1e-9, report.window_s)
    latencies = [r.latency_s for r in window]
    report.latency_p50_ms, report.latency_p95_ms = _quantile_ms(latencies, 0.5), _quantile_ms(latencies, 0.95)
    by_camera: dict[str, list[tuple[float, float]]] = {}
    for r in window:
        by_camera.setdefault(r.camera, []).append((r.captured_at, r.pts))
    report.lag_growth_s = max((_lag_growth(p) for p in by_camera.values()), default=0.0)
    if not spec.loop:
        _score(report, results, events, cams)
    return report


def _dropped(metrics: Any, cameras: dict[str, Any]) -> float:
    total = 0.0
    for name in cameras:
        for reason in ("queue_full", "error"):
            total += metrics.registry.get_sample_value(
                "streamd_frames_dropped_total", {"camera": name, "reason": reason}) or 0.0
    return total


def _counts(metrics: Any, cameras: dict[str, Any]) -> tuple[float, float, float, float]:
    """Faces detected and embedded so far, the summed share of frame pixels detection looked at, and the
    samples detection was planned for (the last two give the mean coverage), over every camera."""
    get = metrics.registry.get_sample_value

    def total(name: str, **labels: str) -> float:
        return sum(get(name, {"camera": cam, **labels}) or 0.0 for cam in cameras)

    detections = sum(total("streamd_detections_total", scope=scope) for scope in ("full", "regions", "none"))
    return (total("streamd_faces_detected_total"), total("streamd_faces_embedded_total"),
            total("streamd_detect_coverage_ratio_total"), detections)


def _score(report: TrialReport, results: list[Any], events: list[Any], cams: dict[str, Any]) -> None:
    from streamd.bench.scoring import accuracy, score_tracks

    event_pts = {(r.camera, r.captured_at): r.pts for r in results}
    figures = accuracy(score_tracks(events, event_pts, cams))
    report.accuracy = figures.lines()
    report.accuracy_figures = asdict(figures)


# --------------------------------------------------------------------------- naive


def run_naive(spec: TrialSpec) -> TrialReport:
    """One thread: VideoCapture decodes every frame; detect, embed every face, search on every sampled frame."""
    from streamd.bench.scenes import load_truth
    from streamd.faces.engine import FaceEngine
    from streamd.index.decision import decide
    from streamd.index.library import FeatureLibrary
    from streamd.recognize import resolve_threshold
    from streamd.settings import EngineSettings

    engine = FaceEngine.from_settings(EngineSettings(**spec.engine))
    library = FeatureLibrary.load(spec.index_dir, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint)
    threshold = resolve_threshold(None, engine)
    clips = [load_truth(Path(p)) for p in spec.clips]
    streams = [_NaiveStream(clips[i % len(clips)].path, clips[i % len(clips)].fps, spec.sample_fps)
               for i in range(spec.streams)]
    report = TrialReport(spec.kind, spec.streams)
    start = time.monotonic()
    spread = clips[0].gop / clips[0].fps  # streams start spread over a keyframe interval, as in run_streamd
    for k, stream in enumerate(streams):
        stream.origin = start + spread * k / len(streams)
    t0 = start + spec.warmup_s
    t1 = t0 + spec.duration_s
    lag_at_t0: list[float] | None = None
    cpu0 = 0.0
    latencies: list[float] = []
    while True:
        now = time.monotonic()
        if lag_at_t0 is None and now >= t0:
            lag_at_t0 = [s.lag(now) for s in streams]
            cpu0 = time.process_time()
        if now >= t1:
            break
        due = [s for s in streams if s.origin + s.video_t <= now]
        if not due:
            time.sleep(max(0.0, min(s.origin + s.video_t for s in streams) - now))
            continue
        for s in due:
            image = s.read()
            if image is None or not s.sampled():
                continue
            began = time.perf_counter()
            analysed = engine.analyze(image, apply_gate=False)
            vectors = [r.vector for r in analysed if r.vector is not None]
            if time.monotonic() >= t0:
                report.faces_detected += len(analysed)
                report.faces_embedded += len(vectors)
            if vectors:
                import numpy as np

                for hits in library.search(np.stack(vectors), 5):
                    decide(hits, threshold, 0.02)
            if time.monotonic() >= t0:
                report.processed += 1
                latencies.append(time.perf_counter() - began)
    end = time.monotonic()
    report.window_s = end - t0
    report.cpu_cores = (time.process_time() - cpu0) / max(1e-9, report.window_s)
    report.expected = spec.sample_fps * report.window_s * spec.streams
    lags = [s.lag(end) for s in streams]
    report.lag_growth_s = max(b - a for a, b in zip(lag_at_t0 or lags, lags))
    report.latency_p50_ms, report.latency_p95_ms = _quantile_ms(latencies, 0.5), _quantile_ms(latencies, 0.95)
    report.rss_mib = rss_mib()
    for s in streams:
        s.cap.release()
    return report


class _NaiveStream:
    """A looping VideoCapture with its own clock (video time of the next frame) and sample schedule."""

    def __init__(self, path: Path, fps: float, sample_fps: float) -> None:
        import cv2

        self.path, self.period, self.sample_period = path, 1.0 / fps, 1.0 / sample_fps
        self.cap = self._open(cv2)
        self.video_t = 0.0  # video time of the next frame to read, continuous across loops
        self.next_sample = 0.0
        self.origin = 0.0  # monotonic time the stream's first frame is due

    def lag(self, now: float) -> float:
        """How far reading is behind the stream's clock (<= 0 while it keeps up)."""
        return now - self.origin - self.video_t

    def _open(self, cv2: Any) -> Any:
        params = [cv2.CAP_PROP_N_THREADS, 1] if hasattr(cv2, "CAP_PROP_N_THREADS") else []
        return cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, params)

    def read(self) -> Any:
        import cv2

        ok, image = self.cap.read()
        if not ok:  # end of the clip: loop
            self.cap.release()
            self.cap = self._open(cv2)
            ok, image = self.cap.read()
        self.frame_t = self.video_t
        self.video_t += self.period
        return image if ok else None

    def sampled(self) -> bool:
        if self.frame_t + 1e-6 < self.next_sample:
            return False
        self.next_sample += self.sample_period
        return True


# --------------------------------------------------------------------------- throughput


def run_throughput(spec: TrialSpec) -> TrialReport:
    """Frames/s of the recognition pool alone, fed from memory as fast as it takes them."""
    import av

    from streamd.app import runner_factory
    from streamd.bench.scenes import load_truth
    from streamd.faces.quality import QualityGate
    from streamd.index.holder import IndexHolder
    from streamd.index.library import FeatureLibrary
    from streamd.pipeline.recognition import RecognitionPipeline
    from streamd.recognize import resolve_threshold
    from streamd.sources.queues import FrameQueue
    from streamd.types import Frame

    clips = [load_truth(Path(p)) for p in spec.clips]
    per_camera = max(1, int(spec.duration_s * spec.sample_fps))
    images: list[list[tuple[float, Any]]] = []
    for i in range(spec.streams):
        clip = clips[i % len(clips)]
        step = max(1, int(round(clip.fps / spec.sample_fps)))
        frames = []
        with av.open(str(clip.path)) as container:
            for k, frame in enumerate(container.decode(video=0)):
                if k % step == 0:
                    frames.append((k / clip.fps, frame.to_ndarray(format="bgr24")))
                if len(frames) >= per_camera:
                    break
        images.append(frames)
    settings = _settings(spec, [], Path(spec.work_dir or tempfile.gettempdir()))
    from streamd.faces.engine import FaceEngine
    from streamd.faces.regions import supports_regions

    probe = FaceEngine.from_settings(settings.engine)
    holder = IndexHolder()
    holder.swap(FeatureLibrary.load(spec.index_dir, expected_dim=probe.dim, expected_fingerprint=probe.fingerprint),
                "bench")
    pipeline = RecognitionPipeline(
        runner_factory(settings), holder, tracking=settings.tracking,
        rec_threshold=resolve_threshold(None, probe), same_person_threshold=probe.same_person_threshold, topk=5,
        gate=QualityGate(settings.engine.quality),
        workers=settings.pipeline.worker_count(), batch_frames=spec.batch_frames, snapshots=None,
        region_detection=settings.pipeline.region_detection
        if spec.region_detection and supports_regions(probe.detector) else None,
    )
    queues = []
    for i, frames in enumerate(images):
        queue = pipeline.add_camera(f"cam{i:02d}", FrameQueue(len(frames) + 1, "drop_newest", wakeup=pipeline.wakeup))
        queues.append((queue, frames))
    pipeline.start()
    report = TrialReport(spec.kind, spec.streams)
    now = time.time()
    cpu0, started = cpu_seconds(), time.perf_counter()
    for i, (queue, frames) in enumerate(queues):
        for seq, (pts, image) in enumerate(frames):
            queue.put(Frame(f"cam{i:02d}", seq, pts, now, image))
        queue.close()
    pipeline.scheduler.wait_drained(600.0)
    elapsed = time.perf_counter() - started
    cpu1 = cpu_seconds()  # before stop(): it ends the worker processes, and their CPU time with them
    pipeline.stop(timeout=30.0)
    report.processed = sum(w.frames_done for w in pipeline.workers)
    report.window_s = elapsed
    report.frames_per_s = report.processed / elapsed
    report.cpu_cores = (cpu1 - cpu0) / elapsed
    report.rss_mib = rss_mib()
    return report


RUNNERS = {"streamd": run_streamd, "naive": run_naive, "throughput": run_throughput}


def main(argv: list[str] | None = None) -> int:
    """``python -m streamd.bench.pipeline_trial SPEC_JSON``: run it, print the report as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    spec = TrialSpec(**json.loads(args[0]))
    try:
        report = RUNNERS[spec.kind](spec)
    except Exception as exc:  # reported to the parent, which prints it in its table
        report = TrialReport(spec.kind, spec.streams, error=f"{type(exc).__name__}: {exc}")
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

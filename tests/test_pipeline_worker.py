"""RecognitionWorker and RecognitionPipeline with a hand-written runner and index (real tracker).

The fake runner "detects" the faces scripted for each image and "embeds" a face as a one-hot
vector of the person hidden in its x position (person = x // 1000); the fake index names each
person with a fixed similarity.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from rtsp import wait_for

from streamd.index.holder import IndexHolder
from streamd.metrics import Metrics
from streamd.pipeline.camera import FrameResult
from streamd.pipeline.recognition import RecognitionPipeline
from streamd.pipeline.runner import Detections, Embeddings, RunnerError
from streamd.pipeline.scheduler import Claim
from streamd.sources.queues import END, FrameQueue
from streamd.tracking.config import TrackingSettings
from streamd.types import Face, Frame, IdentityEvent, Match

DIM = 8
T0 = 1_700_000_000.0
RNG = np.random.default_rng(7)
#: Textured, so that every face crop is sharp for the quality figure.
TEXTURE = RNG.integers(0, 255, (200, 4200, 3), dtype=np.uint8)


def face(person: int, score: float = 0.9, x: float = 100.0) -> Face:
    x += 1000 * person
    return Face((x, 50.0, x + 100.0, 150.0), score)


class FakeRunner:
    """Detects the faces scripted for each image (by identity) and embeds them by person."""

    def __init__(self, script: dict[int, list[Face]], fail: list[BaseException] | None = None) -> None:
        self.script = script
        self.fail = fail or []
        self.detect_calls: list[int] = []
        self.embed_calls: list[list[int]] = []  # faces per image of each call
        self.closed = False
        self._images: list[np.ndarray] = []

    def detect(self, images: Sequence[np.ndarray], regions=None) -> Detections:
        if self.fail:
            raise self.fail.pop(0)
        self._images = list(images)
        self.detect_calls.append(len(images))
        faces = tuple(tuple(self.script.get(id(image), [])) for image in images)
        return Detections(faces, (0.01,) * len(images))

    def embed(self, requests: Sequence[tuple[int, Sequence[Face]]]) -> Embeddings:
        self.embed_calls.append([len(faces) for _, faces in requests])
        out = []
        for _, faces in requests:
            vectors = np.zeros((len(faces), DIM), np.float32)
            for row, f in enumerate(faces):
                vectors[row, int(f.box[0]) // 1000] = 1.0
            out.append(vectors)
        return Embeddings(tuple(out), 0.002)

    def close(self) -> None:
        self.closed = True


class FakeLibrary:
    """Names person p ``labels[p]`` with similarity 0.8; records its searches."""

    def __init__(self, labels: dict[int, str]) -> None:
        self.labels_by_person = labels
        self.searches: list[int] = []

    ntotal = 10
    fingerprint = "fake"

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.labels_by_person)

    def search(self, vectors: np.ndarray, topk: int) -> list[list[Match]]:
        self.searches.append(len(vectors))
        out = []
        for v in vectors:
            p = int(np.argmax(v))
            out.append([Match(p, self.labels_by_person.get(p, f"p{p}"), 0.8), Match(99, "zz", 0.1)])
        return out


class RejectLowScore:
    def check(self, image: np.ndarray, f: Face, *, blur: float | None = None) -> str | None:
        return "low_score" if f.score < 0.5 else None


class Stream:
    """Frames of one camera, 0.2 s apart, each image with its scripted faces."""

    def __init__(self, camera: str, script: dict[int, list[Face]]) -> None:
        self.camera = camera
        self.script = script
        self.seq = 0

    def next(self, faces: list[Face]) -> Frame:
        image = TEXTURE.copy()
        self.script[id(image)] = faces
        f = Frame(self.camera, self.seq, self.seq * 0.2, T0 + self.seq * 0.2, image)
        self.seq += 1
        return f


def make_pipeline(
    runner: FakeRunner, library: FakeLibrary | None, *, workers: int = 1, batch: int = 4, **kw: object
) -> tuple[RecognitionPipeline, list[IdentityEvent], list[FrameResult], Metrics]:
    holder = IndexHolder()
    if library is not None:
        holder.swap(library, "test")
    events: list[IdentityEvent] = []
    results: list[FrameResult] = []
    metrics = Metrics()
    lock = threading.Lock()

    def on_result(r: FrameResult) -> None:
        with lock:
            results.append(r)

    pipeline = RecognitionPipeline(
        lambda: runner, holder, tracking=TrackingSettings(**kw), rec_threshold=0.45, same_person_threshold=0.30, topk=5,
        gate=RejectLowScore(), metrics=metrics, workers=workers, batch_frames=batch,
        sinks=[events.append], on_result=on_result,
    )
    return pipeline, events, results, metrics


def worker_of(pipeline: RecognitionPipeline):  # type: ignore[no-untyped-def]
    """A worker whose batches the test runs itself (no thread)."""
    from streamd.pipeline.worker import RecognitionWorker

    return RecognitionWorker(
        "test-worker", pipeline.scheduler, pipeline._cameras, pipeline._runner_factory, pipeline.holder,
        topk=5, batch_frames=4, emit=pipeline._emit, on_result=pipeline._on_result,
    )


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_face_identified_with_confidence_is_not_embedded_on_every_sample() -> None:
    # given one enrolled person in front of a camera for 30 samples
    script: dict[int, list[Face]] = {}
    runner, library = FakeRunner(script), FakeLibrary({1: "alice"})
    pipeline, events, results, _ = make_pipeline(runner, library, recheck_every=10)
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    # when every sample is processed
    for _ in range(30):
        worker.process([Claim("cam", stream.next([face(1)]))])
    # then she is identified, and after that only every 10th sample is embedded again
    identified = [e for e in events if e.type == "identified"]
    assert [e.label for e in identified] == ["alice"]
    first_named = next(r.seq for r in results if any(e.type == "identified" for e in r.events))
    later = [r.seq for r in results if r.seq > first_named and r.embedded]
    assert 1 <= len(later) <= 3, later
    assert all(b - a >= 5 for a, b in zip(later, later[1:]))
    assert sum(len(r.embedded) for r in results) < 10


def test_faces_of_a_batch_are_embedded_in_one_call_and_searched_in_one_index_call() -> None:
    # given two cameras with a new face each
    script: dict[int, list[Face]] = {}
    runner, library = FakeRunner(script), FakeLibrary({1: "alice", 2: "bob"})
    pipeline, _, results, _ = make_pipeline(runner, library)
    for cam in ("a", "b"):
        pipeline.add_camera(cam)
    worker = worker_of(pipeline)
    a, b = Stream("a", script), Stream("b", script)
    # when one batch holds a frame of each
    worker.process([Claim("a", a.next([face(1)])), Claim("b", b.next([face(2), face(3)]))])
    # then one detect call, one embed call with both images' faces, one search of 3 vectors
    assert runner.detect_calls == [2]
    assert runner.embed_calls == [[1, 2]]
    assert library.searches == [3]
    assert sorted(r.camera for r in results) == ["a", "b"]


def test_the_index_is_read_once_per_batch_so_a_swap_lands_between_samples() -> None:
    # given a camera and an index that is swapped after the first batch
    script: dict[int, list[Face]] = {}
    old, new = FakeLibrary({1: "alice"}), FakeLibrary({1: "alice"})
    runner = FakeRunner(script)
    pipeline, _, _, _ = make_pipeline(runner, old)
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    # when
    worker.process([Claim("cam", stream.next([face(1)]))])
    pipeline.holder.swap(new, "reload")
    worker.process([Claim("cam", stream.next([face(1)]))])
    # then each batch searched one generation, the second the new one
    assert old.searches == [1]
    assert new.searches == [1]


def test_faces_the_quality_gate_rejects_are_counted_and_never_embedded() -> None:
    # given a faint face (score 0.3) next to a good one
    script: dict[int, list[Face]] = {}
    runner, library = FakeRunner(script), FakeLibrary({1: "alice"})
    pipeline, _, results, metrics = make_pipeline(runner, library)
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    # when three samples are processed
    for _ in range(3):
        worker.process([Claim("cam", stream.next([face(1), face(2, score=0.3)])) ])
    # then only the good face was embedded; detections, rejections and embeddings are counted
    assert all(r.embedded in ((), (0,)) for r in results)
    assert [r.rejected for r in results] == [(None, "low_score")] * 3
    assert metric(metrics, "streamd_faces_detected_total", camera="cam") == 6
    assert metric(metrics, "streamd_faces_rejected_total", camera="cam", reason="low_score") == 3
    assert metric(metrics, "streamd_faces_embedded_total", camera="cam") == sum(len(r.embedded) for r in results)
    assert metric(metrics, "streamd_stage_duration_seconds_count", camera="cam", stage="detect") == 3
    assert metric(metrics, "streamd_frame_to_decision_seconds_count", camera="cam") == 3


def test_an_engine_error_loses_the_batch_not_the_worker_and_a_dead_runner_is_replaced() -> None:
    # given a runner that fails once with an engine error and once as a dead child process
    script: dict[int, list[Face]] = {}
    runner = FakeRunner(script, fail=[RuntimeError("onnx exploded"), RunnerError("child died")])
    made: list[FakeRunner] = []

    def factory() -> FakeRunner:
        made.append(runner)
        return runner

    pipeline, _, results, metrics = make_pipeline(runner, FakeLibrary({1: "alice"}))
    pipeline._runner_factory = factory
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    # when three samples come
    for _ in range(3):
        worker.process([Claim("cam", stream.next([face(1)]))])
    # then two were dropped as errors, the third recognised; the dead runner was closed and replaced
    assert metric(metrics, "streamd_frames_dropped_total", camera="cam", reason="error") == 2
    assert [r.seq for r in results] == [2]
    assert runner.closed
    assert len(made) == 2


def test_the_end_marker_flushes_the_cameras_tracks() -> None:
    # given a confirmed track
    script: dict[int, list[Face]] = {}
    runner = FakeRunner(script)
    pipeline, events, _, _ = make_pipeline(runner, FakeLibrary({1: "alice"}))
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    for _ in range(4):
        worker.process([Claim("cam", stream.next([face(1)]))])
    # when the camera's stream ends
    worker.process([Claim("cam", END)])
    # then the track ends
    assert [e.type for e in events][-1] == "end"
    assert {e.track_id for e in events} == {1}


def test_without_an_index_faces_are_tracked_and_stay_unknown() -> None:
    # given no index loaded yet
    script: dict[int, list[Face]] = {}
    runner = FakeRunner(script)
    pipeline, events, _, _ = make_pipeline(runner, None)
    pipeline.add_camera("cam")
    worker = worker_of(pipeline)
    stream = Stream("cam", script)
    # when
    for _ in range(6):
        worker.process([Claim("cam", stream.next([face(1)]))])
    # then the person is announced but not named
    assert [e.type for e in events] == ["new"]
    assert events[0].label is None


@pytest.mark.parametrize("workers", [1, 2])
def test_the_pool_processes_every_cameras_frames_in_order_and_ends_their_tracks(workers: int) -> None:
    # given three cameras with 12 frames each, queued, then ended
    script: dict[int, list[Face]] = {}
    runner, library = FakeRunner(script), FakeLibrary({1: "alice", 2: "bob", 3: "carol"})
    pipeline, events, results, _ = make_pipeline(runner, library, workers=workers, batch=2)
    queues = {c: pipeline.add_camera(c, FrameQueue(20, wakeup=pipeline.wakeup)) for c in ("a", "b", "c")}
    pipeline.start()
    # when the frames are put and the streams end
    for k, (cam, queue) in enumerate(queues.items()):
        stream = Stream(cam, script)
        for _ in range(12):
            queue.put(stream.next([face(k + 1)]))
        queue.close()
    stopped = pipeline.stop(timeout=20.0)
    # then everything was processed, per camera in order, and every track ended with its name
    assert stopped
    for cam in queues:
        assert [r.seq for r in results if r.camera == cam] == list(range(12))
    ends = {e.camera: e.label for e in events if e.type == "end"}
    assert ends == {"a": "alice", "b": "bob", "c": "carol"}
    assert not any(w.alive for w in pipeline.workers)


def test_stop_flushes_cameras_whose_queues_never_ended() -> None:
    # given a camera with a confirmed track whose source never closed its queue
    script: dict[int, list[Face]] = {}
    runner = FakeRunner(script)
    pipeline, events, results, _ = make_pipeline(runner, FakeLibrary({1: "alice"}))
    queue = pipeline.add_camera("cam", FrameQueue(20, wakeup=pipeline.wakeup))
    pipeline.start()
    stream = Stream("cam", script)
    for _ in range(4):
        queue.put(stream.next([face(1)]))
    assert wait_for(lambda: len(results) == 4, 10.0)
    # when the pipeline stops
    stopped = pipeline.stop(timeout=0.5)
    # then it says the drain was incomplete but the track still ended
    assert not stopped
    assert [e.type for e in events if e.type == "end"] == ["end"]


class SlowRunner(FakeRunner):
    """Takes ``delay`` seconds per frame, far slower than the camera's sample rate."""

    def __init__(self, delay: float) -> None:
        super().__init__({})
        self.delay = delay

    def detect(self, images: Sequence[np.ndarray], regions=None) -> Detections:
        import time

        time.sleep(self.delay * len(images))
        return super().detect(images)


def test_a_slow_engine_never_makes_the_decoder_fall_behind_live(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given a 25 fps video file read in real time, sampled at 5 fps, and an engine doing 2 frames/s
    import time

    import av

    from streamd.sources.config import CameraSettings
    from streamd.sources.supervisor import CameraSource

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for k in range(25 * 6):
            image = np.full((240, 320, 3), k % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    runner = SlowRunner(0.5)
    pipeline, _, results, metrics = make_pipeline(runner, FakeLibrary({}), workers=1, batch=1)
    camera = CameraSettings(name="cam", url=str(clip), realtime=True, sample_fps=5, queue_size=2)
    queue = pipeline.add_camera(camera)
    source = CameraSource(camera, metrics, queue=queue)
    # when it runs for 4 s
    pipeline.start()
    source.start()
    time.sleep(4.0)
    source.stop()
    pipeline.stop(5.0)
    # then the camera decoded at the video's pace, the queue dropped the surplus (counted), and
    # every frame recognised was at most a queue's length old when taken
    decoded = metric(metrics, "streamd_frames_decoded_total", camera="cam")
    sampled = metric(metrics, "streamd_frames_sampled_total", camera="cam")
    dropped = metric(metrics, "streamd_frames_dropped_total", camera="cam", reason="queue_full")
    assert decoded >= 25 * 3.5
    assert sampled >= 5 * 3.5
    assert dropped >= sampled - len(results) - 3
    assert dropped > 0
    assert len(results) <= 10
    waits = [r.decided_at - r.captured_at - 0.5 for r in results]
    assert max(waits) < 2 * 0.5 + 0.5


def test_starting_the_pipeline_turns_opencvs_own_thread_pool_off() -> None:
    # given OpenCV with a pool of its own
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    assert cv2.getNumThreads() == 4
    pipeline, _, _, _ = make_pipeline(FakeRunner({}), None)
    try:
        # when the pipeline starts
        pipeline.start()
        # then OpenCV calls run in the calling thread: the cameras and workers are the parallelism
        assert cv2.getNumThreads() == 1
    finally:
        pipeline.stop(timeout=2.0)
        cv2.setNumThreads(before)

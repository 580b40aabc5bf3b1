"""The recognition loop: camera frame queues in, identity events out, through a pool of workers.

::

    pipeline = RecognitionPipeline(runner_factory, holder, tracking=..., rec_threshold=..., same_person_threshold=..., ...)
    queue = pipeline.add_camera(camera_settings)       # a FrameQueue for the camera's source
    pipeline.add_sink(publisher.publish_event)          # each IdentityEvent goes to every sink
    pipeline.start()
    ...                                                 # sources put frames; events flow
    # shutdown: stop the sources first (each closes its queue: the end marker), then
    pipeline.stop(timeout)                              # finish queued frames, flush `end` events

The pool is ``workers`` :class:`~streamd.pipeline.worker.RecognitionWorker` threads, each with a
runner of its own (an engine per worker, in-thread or in a child process). Every camera has a
TrackManager; a camera is processed by one worker at a time.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamd.index.holder import IndexHolder
from streamd.metrics import Metrics
from streamd.pipeline.camera import CameraRecognition
from streamd.pipeline.config import RegionDetectionSettings
from streamd.pipeline.quality import Gate
from streamd.pipeline.regions import RegionPlanner
from streamd.pipeline.runner import FaceRunner, single_threaded_opencv
from streamd.pipeline.scheduler import FrameScheduler
from streamd.pipeline.worker import RecognitionWorker, ResultCallback
from streamd.snapshots import SnapshotStore
from streamd.sources.queues import FrameQueue
from streamd.tracking.config import TrackingSettings
from streamd.tracking.geometry import Polygon
from streamd.types import IdentityEvent, Match

if TYPE_CHECKING:
    from streamd.sources.config import CameraSettings

log = logging.getLogger(__name__)

#: Receives every event, from the worker thread that made it; must not block for long.
EventSink = Callable[[IdentityEvent], object]


class RecognitionPipeline:
    """Cameras' frame queues -> workers -> trackers -> event sinks (see the module docstring)."""

    def __init__(
        self,
        runner_factory: Callable[[], FaceRunner],
        holder: IndexHolder,
        *,
        tracking: TrackingSettings,
        rec_threshold: float,
        same_person_threshold: float,
        topk: int,
        margin: float = 0.02,
        gate: Gate | None,
        metrics: Metrics | None = None,
        workers: int = 1,
        batch_frames: int = 4,
        snapshots: SnapshotStore | None = None,
        sinks: Iterable[EventSink] = (),
        on_result: ResultCallback | None = None,
        region_detection: RegionDetectionSettings | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"the recognition pipeline needs at least 1 worker, got {workers}")
        self.holder = holder
        self.tracking = tracking
        self.rec_threshold = rec_threshold
        self.same_person_threshold = same_person_threshold
        self.topk = topk
        self.margin = margin
        self.gate = gate
        self.metrics = metrics if metrics is not None else Metrics()
        self.snapshots = snapshots
        #: None: every sample is detected whole (tests and tools that want exactly that).
        self.region_detection = region_detection
        self.scheduler = FrameScheduler(workers=workers)
        self._runner_factory = runner_factory
        self._worker_count = workers
        self._batch_frames = batch_frames
        self._sinks: list[EventSink] = list(sinks)
        self._on_result = on_result
        self._cameras: dict[str, CameraRecognition] = {}
        self._workers: list[RecognitionWorker] = []
        self._started = False

    # ------------------------------------------------------------------ wiring

    def add_sink(self, sink: EventSink) -> None:
        """Send every event to ``sink`` too (call before :meth:`start`)."""
        self._sinks.append(sink)

    def add_camera(
        self,
        camera: CameraSettings | str,
        queue: FrameQueue | None = None,
        *,
        zones: Mapping[str, Polygon] | None = None,
        masks: Sequence[Polygon] = (),
    ) -> FrameQueue:
        """Recognise the frames of ``camera``; returns the queue its source must fill.

        With ``CameraSettings``, the queue's size and drop policy and the zones and masks come
        from them; with a name, pass ``queue`` (made with :attr:`wakeup`) or get a default one.
        """
        from streamd.tracking.manager import TrackManager  # scipy: only when a camera is added

        if isinstance(camera, str):
            name = camera
            if queue is None:
                queue = FrameQueue(2, "drop_oldest", self.metrics, wakeup=self.wakeup)
        else:
            name = camera.name
            zones = zones or {z.name: z.polygon for z in camera.zones}
            masks = masks or camera.masks
            if queue is None:  # (not `or`: an empty queue is falsy)
                queue = FrameQueue(camera.queue_size, camera.drop_policy, self.metrics, wakeup=self.wakeup)
        manager = TrackManager(
            name,
            self.tracking,
            rec_threshold=self.rec_threshold,
            same_person_threshold=self.same_person_threshold,
            margin=self.margin,
            search=functools.partial(search_one, self.holder, self.topk),
            zones=zones,
            masks=masks,
            snapshots=self.snapshots,
            metrics=self.metrics,
        )
        planner = RegionPlanner(self.region_detection) if self.region_detection is not None else None
        self._cameras[name] = CameraRecognition(name, manager, self.gate, self.metrics, planner)
        self.scheduler.add(name, queue)
        return queue

    def remove_camera(self, name: str, timeout: float = 10.0) -> bool:
        """Forget a camera whose source was stopped (its queue closed), once its `end` events are out.

        Waits up to ``timeout`` s for a worker to take the end marker; after that the camera's
        tracks are flushed here. True when the workers finished it in time.
        """
        done = self.scheduler.wait_gone(name, timeout)
        camera = self._cameras.pop(name, None)
        if not done:
            self.scheduler.discard(name)
            if camera is not None:
                self._emit(camera.flush())
        return done

    @property
    def wakeup(self) -> threading.Event:
        """The event every camera queue must set on put (``FrameQueue(..., wakeup=pipeline.wakeup)``)."""
        return self.scheduler.wakeup

    @property
    def workers(self) -> list[RecognitionWorker]:
        return list(self._workers)

    def heartbeat(self) -> float:
        """time.monotonic() of the least recent worker loop turn (a stuck worker makes it old)."""
        return min((w.last_beat for w in self._workers), default=time.monotonic())

    def forget_labels(self, labels: Iterable[str]) -> None:
        """People who left the index: every camera's tracker drops them at its next sample (any thread)."""
        labels = frozenset(labels)
        for camera in list(self._cameras.values()):  # a copy: cameras may come and go meanwhile
            camera.manager.forget_labels(labels)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RecognitionPipeline:
        """Load one engine per worker (errors raise here) and start the workers."""
        if self._started:
            raise RuntimeError("RecognitionPipeline.start() called twice")
        self._started = True
        single_threaded_search()
        single_threaded_opencv()
        try:
            for n in range(self._worker_count):
                worker = RecognitionWorker(
                    f"streamd-recognition-{n}",
                    self.scheduler,
                    self._cameras,
                    self._runner_factory,
                    self.holder,
                    topk=self.topk,
                    batch_frames=self._batch_frames,
                    emit=self._emit,
                    on_result=self._on_result,
                )
                self._workers.append(worker.start())
        except BaseException:
            self._halt(2.0)
            raise
        log.info("recognition: %d worker(s) started", len(self._workers))
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish the frames still queued, flush every camera's `end` events, stop the workers.

        Call after the sources were stopped (their queues closed). True when everything ended
        within ``timeout`` seconds; otherwise what is left is flushed and abandoned.
        """
        deadline = time.monotonic() + timeout
        drained = self.scheduler.wait_drained(timeout, alive=lambda: any(w.alive for w in self._workers))
        stopped = self._halt(max(0.0, deadline - time.monotonic()))
        # Cameras whose queues were never closed (or not drained in time) still get their `end` events.
        for name in self.scheduler.cameras():
            camera = self._cameras.get(name)
            if camera is not None:
                self._emit(camera.flush())
        return drained and stopped

    def _halt(self, timeout: float) -> bool:
        for worker in self._workers:
            worker.stop()
        deadline = time.monotonic() + timeout
        ok = True
        for worker in self._workers:
            if not worker.join(max(0.0, deadline - time.monotonic())):
                log.warning("recognition: %s did not stop in time", worker.name)
                ok = False
        return ok

    # ------------------------------------------------------------------ events

    def _emit(self, events: Sequence[IdentityEvent]) -> None:
        for event in events:
            for sink in self._sinks:
                try:
                    sink(event)
                except Exception:  # one broken output must not stop the others or the frames
                    log.exception("recognition: event sink %r failed on %s", sink, event.event_id)


def search_one(holder: IndexHolder, topk: int, vector: np.ndarray) -> list[Match]:
    """The index's top ``topk`` matches for one vector (a track's template), on the index in use now."""
    library = holder.get()
    if library is None:
        return []
    return library.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), topk)[0]


def single_threaded_search() -> None:
    """Make faiss search with one OpenMP thread (process-wide).

    The workers search a few vectors at a time, several workers at once, next to decoder threads.
    An OpenMP team per tiny search costs more than the search: its threads spin at the barrier
    while the cores are busy elsewhere (measured: ~4 ms per 2-vector search on a loaded 2-core
    machine, against 0.03 ms alone). The workers are the parallelism.
    """
    try:
        import faiss
    except ImportError:  # no index support installed: nothing searches
        return
    faiss.omp_set_num_threads(1)

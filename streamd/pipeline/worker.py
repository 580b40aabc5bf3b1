"""A recognition worker: claims frames of several cameras and runs them through the engine together.

One batch (at most ``batch_frames`` frames, each of a different camera)::

    plan each frame's detection        (CameraRecognition.plan: whole frame, regions or nowhere)
    detect every frame                 (runner.detect: one call for the batch)
    gate + track each frame            (CameraRecognition.update: which faces to embed)
    embed the wanted faces of all      (runner.embed: one engine batch across cameras)
    search all vectors                 (one index call; the index is read once per batch, so a
                                        hot reload lands between samples, never inside one)
    observe each frame                 (tracker + identity vote -> IdentityEvents, in order)

Faces the tracker does not ask for (tracks already named with confidence) are never embedded.
An engine error loses that batch's frames (counted as dropped, reason ``error``) and never the
worker; a runner whose child process died is replaced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from streamd.index.holder import IndexHolder
from streamd.pipeline.camera import CameraRecognition, FrameResult
from streamd.pipeline.runner import FaceRunner, RunnerError
from streamd.pipeline.scheduler import Claim, FrameScheduler
from streamd.tracking.manager import EmbedResult
from streamd.types import Frame, IdentityEvent, Match

log = logging.getLogger(__name__)

#: An engine error is logged at most once per this many seconds per worker (the rest are counted).
_ERROR_LOG_INTERVAL_S = 10.0

EventCallback = Callable[[Sequence[IdentityEvent]], None]
ResultCallback = Callable[[FrameResult], None]


class RecognitionWorker:
    """A thread that processes batches of claimed frames until stopped (see the module docstring)."""

    def __init__(
        self,
        name: str,
        scheduler: FrameScheduler,
        cameras: Mapping[str, CameraRecognition],
        runner_factory: Callable[[], FaceRunner],
        holder: IndexHolder,
        *,
        topk: int,
        batch_frames: int,
        emit: EventCallback,
        on_result: ResultCallback | None = None,
    ) -> None:
        self.name = name
        self.scheduler = scheduler
        self.cameras = cameras
        self.holder = holder
        self.topk = topk
        self.batch_frames = batch_frames
        self._emit = emit
        self._on_result = on_result
        self._runner_factory = runner_factory
        self._runner: FaceRunner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error_log = float("-inf")
        self._errors_unlogged = 0
        #: Frames this worker finished (tests and the benchmark read it).
        self.frames_done = 0
        #: time.monotonic() of the loop's last turn: a worker stuck in an engine call stops beating.
        self.last_beat = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RecognitionWorker:
        """Build the runner (engine loads here, so a bad model fails the caller) and start the thread."""
        self._runner = self._runner_factory()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop after its current batch (see :meth:`join`)."""
        self._stop.set()
        self.scheduler.wakeup.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; closes the runner once it ended. True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            claims = self.scheduler.claim(self.batch_frames, timeout=0.5, stop=self._stop)
            if not claims:
                continue
            try:
                self.process(claims)
            finally:
                self.scheduler.release(claims)

    def process(self, claims: Sequence[Claim]) -> None:
        """Run one batch of claims: frames through the engine, ended cameras flushed."""
        # A camera removed meanwhile (SIGHUP, a stop that timed out) is skipped.
        frames = []
        for c in claims:
            camera = self.cameras.get(c.camera)
            if camera is not None and isinstance(c.item, Frame):
                frames.append((camera, c.item))
        if frames:
            try:
                self._recognise(frames)
            except Exception as exc:  # an engine or index failure loses these frames, not the worker
                self._failed(frames, exc)
        for claim in claims:
            camera = self.cameras.get(claim.camera)
            if claim.ended and camera is not None:
                self._emit(camera.flush())

    def _recognise(self, frames: Sequence[tuple[CameraRecognition, Frame]]) -> None:
        runner = self._ensure_runner()
        plans = [camera.plan(frame) for camera, frame in frames]
        found = runner.detect([frame.image for _, frame in frames], [plan.regions for plan in plans])
        wanted = []
        blurs = found.blur if found.blur is not None else (None,) * len(frames)
        looks = found.looks if found.looks is not None else (None,) * len(frames)
        for (camera, frame), faces, seconds, blur, look in zip(frames, found.faces, found.seconds, blurs, looks):
            requests = camera.update(frame, faces, seconds, blur, look)
            wanted.append([r.face_index for r in requests])
        batch = [(i, [found.faces[i][k] for k in idx]) for i, idx in enumerate(wanted) if idx]
        vectors: dict[int, np.ndarray] = {}
        embed_s = 0.0
        if batch:
            embedded = runner.embed(batch)
            embed_s = embedded.seconds
            vectors = {i: v for (i, _), v in zip(batch, embedded.vectors)}
        matches, search_s = self._search([vectors[i] for i, _ in batch])
        total = sum(len(idx) for idx in wanted) or 1
        hits = iter(matches)
        for i, ((camera, frame), idx) in enumerate(zip(frames, wanted)):
            results = {}
            if idx:
                for k, vector in zip(idx, vectors[i]):
                    results[k] = EmbedResult(vector, next(hits))
            share = len(idx) / total  # the batch's embed and search time, split by faces
            result = camera.observe(frame, results, embed_s * share, search_s * share)
            self.frames_done += 1
            if result.events:
                self._emit(result.events)
            if self._on_result is not None:
                self._on_result(result)

    def _search(self, arrays: Sequence[np.ndarray]) -> tuple[list[list[Match]], float]:
        """Index matches for every vector of the batch, in order, and the seconds it took."""
        if not arrays:
            return [], 0.0
        stacked = np.concatenate(arrays).astype(np.float32, copy=False)
        library = self.holder.get()  # once per batch: every sample of it sees one index generation
        if library is None or len(stacked) == 0:
            return [[] for _ in range(len(stacked))], 0.0
        started = time.perf_counter()
        found = library.search(stacked, self.topk)
        return found, time.perf_counter() - started

    def _ensure_runner(self) -> FaceRunner:
        if self._runner is None:
            self._runner = self._runner_factory()
        return self._runner

    def _failed(self, frames: Sequence[tuple[CameraRecognition, Frame]], exc: Exception) -> None:
        for camera, frame in frames:
            camera.drop(frame, "error")
        if isinstance(exc, RunnerError) and self._runner is not None:
            self._runner.close()
            self._runner = None  # a new one is made for the next batch
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            more = f" ({self._errors_unlogged} more since the last report)" if self._errors_unlogged else ""
            cams = ", ".join(sorted({c.camera for c, _ in frames}))
            log.error("%s: recognition failed for camera(s) %s: %s%s", self.name, cams, exc, more,
                      exc_info=not isinstance(exc, RunnerError))
            self._last_error_log, self._errors_unlogged = now, 0
        else:
            self._errors_unlogged += 1

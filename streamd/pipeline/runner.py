"""Where detection and embedding run: in the worker's own thread, or in a child process of its own.

A recognition worker takes a batch of frames (of different cameras) and calls its runner twice:
``detect(images)`` for every frame, then, once the trackers have said which faces they want,
``embed(requests)`` with (image number, faces) pairs pointing into that same batch. Faces of the
whole batch are embedded in one engine call when the embedder takes aligned chips
(``embed_chips``), so an embedder with a dynamic batch dimension runs one batch for every camera.

- :class:`LocalRunner` computes in the calling thread. onnxruntime, OpenCV's DNN (YuNet) and
  dlib's HOG detector release the GIL while they compute, so two worker threads keep two cores
  busy, and frames are handed over by reference.
- :class:`ProcessRunner` hands both calls to a child process (``spawn``: no fork of a threaded
  daemon) that owns its own engine. Frames go through shared memory (one copy per frame, no
  pickling), faces and vectors come back through a pipe.

Measured on the 2-core machine (``streamd bench pipeline``). The pool alone on 4 cameras' frames:
with YuNet + MobileFaceNet, 2 threads 98-115 frames/s, 2 processes 89-92 (the copies and round
trips cost); with dlib, 2 threads 8.1 frames/s on 1.55 cores, 2 processes 12.5, because
``compute_face_descriptor`` holds the GIL for most of its ~100 ms per face. The whole pipeline,
where 20+ decoder threads and the trackers also want the GIL: YuNet + MobileFaceNet kept up with
32 streams in processes and 30 in threads (24 and 21 with YuNet on OpenCV's DNN), since the
engines' Python around each call (resizing, region crops, decoding YuNet's output, alignment)
runs in the children. ``pipeline.worker_mode: auto`` therefore picks processes for dlib and onnx.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamd.errors import ModelError
from streamd.faces.look import FaceLook, face_look
from streamd.faces.quality import blur_variance
from streamd.faces.regions import Rect, detect_in_regions, supports_regions
from streamd.types import Face

if TYPE_CHECKING:
    from streamd.settings import EngineSettings

log = logging.getLogger(__name__)

#: (index of the image in the last ``detect`` call, the faces of it to embed).
EmbedItem = tuple[int, Sequence[Face]]
#: Where to detect in one image: None for the whole image, else rectangles (empty: nowhere).
Regions = tuple[Rect, ...] | None


@dataclass(frozen=True)
class Detections:
    """Faces per image, in the order the images were given, and the seconds each image took.

    ``blur`` holds each face's sharpness (:func:`~streamd.faces.quality.blur_variance`), measured
    where the detection ran, or None when the runner did not measure it (the caller then does);
    ``looks`` each face's :class:`~streamd.faces.look.FaceLook` (None for an empty box), measured
    there too, or None when the runner did not measure them (the tracker then relies on boxes).
    """

    faces: tuple[tuple[Face, ...], ...]
    seconds: tuple[float, ...]
    blur: tuple[tuple[float, ...], ...] | None = None
    looks: tuple[tuple[FaceLook | None, ...], ...] | None = None


@dataclass(frozen=True)
class Embeddings:
    """One (n_i, dim) float32 array per request, and the seconds the whole call took."""

    vectors: tuple[np.ndarray, ...]
    seconds: float


class FaceRunner(Protocol):
    """Runs a detector and an embedder for a recognition worker (see the module docstring)."""

    def detect(self, images: Sequence[np.ndarray], regions: Sequence[Regions] | None = None) -> Detections: ...

    def embed(self, requests: Sequence[EmbedItem]) -> Embeddings: ...

    def close(self) -> None: ...


class RunnerError(RuntimeError):
    """The runner cannot go on (its child process died); the worker replaces it."""


# --------------------------------------------------------------------------- the computation


class FaceCompute:
    """Detection and embedding of a batch of images with one detector and one embedder.

    The same code runs in a worker thread (:class:`LocalRunner`) and in a child process.
    """

    def __init__(self, detector: Any, embedder: Any) -> None:
        self.detector = detector
        self.embedder = embedder

    def detect(self, images: Sequence[np.ndarray], regions: Sequence[Regions] | None = None) -> Detections:
        """Faces per image and their sharpness; ``regions[i]`` limits image i's detection (see
        :mod:`streamd.faces.regions`).

        Sharpness is measured here rather than by the quality gate in the worker thread: in a
        child process its four OpenCV calls per face no longer wait for the daemon's GIL between
        them (py-spy on 20 streams: the parent's blur measurement was a fifth of a worker's time).
        """
        found = self._detect(images, regions)
        blur = tuple(tuple(blur_variance(image, face.box) for face in faces) for image, faces in zip(images, found.faces))
        looks = tuple(tuple(face_look(image, face.box) for face in faces) for image, faces in zip(images, found.faces))
        return Detections(found.faces, found.seconds, blur, looks)

    def _detect(self, images: Sequence[np.ndarray], regions: Sequence[Regions] | None) -> Detections:
        if regions is not None and any(r is not None for r in regions) and supports_regions(self.detector):
            faces, seconds = [], []
            for image, where in zip(images, regions):
                started = time.perf_counter()
                faces.append(tuple(detect_in_regions(self.detector, image, where)))
                seconds.append(time.perf_counter() - started)
            return Detections(tuple(faces), tuple(seconds))
        batch = getattr(self.detector, "detect_batch", None)
        if batch is not None and len(images) > 1:
            started = time.perf_counter()
            found = batch(list(images))
            share = (time.perf_counter() - started) / len(images)
            return Detections(tuple(tuple(f) for f in found), (share,) * len(images))
        faces, seconds = [], []
        for image in images:
            started = time.perf_counter()
            faces.append(tuple(self.detector.detect(image)))
            seconds.append(time.perf_counter() - started)
        return Detections(tuple(faces), tuple(seconds))

    def embed(self, images: Sequence[np.ndarray], requests: Sequence[EmbedItem]) -> Embeddings:
        started = time.perf_counter()
        dim = int(self.embedder.dim)
        chips_fn = getattr(self.embedder, "embed_chips", None)
        if chips_fn is not None:
            from streamd.faces.align import ARCFACE_SIZE, face_chip

            chips = [face_chip(images[i], face, ARCFACE_SIZE) for i, faces in requests for face in faces]
            flat = np.asarray(chips_fn(chips), dtype=np.float32) if chips else np.zeros((0, dim), np.float32)
            out, start = [], 0
            for _, faces in requests:
                out.append(flat[start : start + len(faces)])
                start += len(faces)
        else:
            out = [
                np.asarray(self.embedder.embed(images[i], list(faces)), dtype=np.float32)
                if faces
                else np.zeros((0, dim), np.float32)
                for i, faces in requests
            ]
        return Embeddings(tuple(out), time.perf_counter() - started)


class LocalRunner:
    """Computes in the calling thread with an engine of its own (engines are not shared by threads)."""

    def __init__(self, engine: Any) -> None:
        self._compute = FaceCompute(engine.detector, engine.embedder)
        self._images: Sequence[np.ndarray] = ()

    def detect(self, images: Sequence[np.ndarray], regions: Sequence[Regions] | None = None) -> Detections:
        self._images = list(images)
        return self._compute.detect(self._images, regions)

    def embed(self, requests: Sequence[EmbedItem]) -> Embeddings:
        return self._compute.embed(self._images, requests)

    def close(self) -> None:
        self._images = ()


def single_threaded_opencv() -> None:
    """Make OpenCV run its calls in the calling thread, without its own thread pool (process-wide).

    The daemon calls OpenCV from many threads at once (camera threads convert sampled frames,
    workers and recognition processes resize, measure motion and sharpness, align faces), on
    small images. Splitting such a call over the pool gains little, and afterwards the pool's
    threads busy-wait (``sched_yield``) for the next call: at 30 streams on 2 cores the pool
    thread took 3.4 % of all CPU samples, four fifths of it yielding, and a run of 34 streams
    needed 1.70-1.74 cores with one thread against 1.78-1.80 with the pool. The cameras and
    workers are the parallelism. An OpenCV-backed engine set up afterwards (YuNet on
    ``cv2.FaceDetectorYN`` with ``threads``) still sets its own figure.
    """
    import cv2

    cv2.setNumThreads(1)


# --------------------------------------------------------------------------- child process


class ProcessRunner:
    """Computes in a child process of its own; frames travel through shared memory.

    One shared-memory block per image slot of a batch, grown when a larger frame comes. The
    child is started at construction and answers ``ready`` once its engine is loaded; an engine
    that fails to load raises the child's one-line error here.
    """

    def __init__(self, engine_settings: EngineSettings, *, start_timeout_s: float = 120.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=child_main, args=(child_conn, engine_settings), name="streamd-recognition", daemon=True
        )
        self._proc.start()
        child_conn.close()
        self._slots: list[SharedMemory] = []
        self._closed = False
        try:
            reply = self._receive(start_timeout_s, "start", raw=True)
        except RunnerError:
            self.close()
            raise
        if reply[0] != "ready":
            self.close()
            # The engine's own one-line error: a missing model stays a ModelError for the caller.
            raise (ModelError if reply[2] else RunnerError)(str(reply[1]))

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def detect(self, images: Sequence[np.ndarray], regions: Sequence[Regions] | None = None) -> Detections:
        frames = []
        for slot, image in enumerate(images):
            shm = self._slot(slot, image.nbytes)
            np.ndarray(image.shape, np.uint8, buffer=shm.buf)[...] = image
            frames.append((shm.name, image.shape))
        self._send(("detect", frames, [shm.name for shm in self._slots], regions))
        _, faces, seconds, blur, looks = self._receive(None, "detect")
        return Detections(faces, seconds, blur, looks)

    def embed(self, requests: Sequence[EmbedItem]) -> Embeddings:
        self._send(("embed", [(i, tuple(faces)) for i, faces in requests]))
        _, vectors, seconds = self._receive(None, "embed")
        return Embeddings(vectors, seconds)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self._proc.join(5.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2.0)
        self._conn.close()
        for shm in self._slots:
            shm.close()
            shm.unlink()
        self._slots = []

    def _slot(self, index: int, nbytes: int) -> SharedMemory:
        while len(self._slots) <= index:
            self._slots.append(SharedMemory(create=True, size=max(nbytes, 1)))
        shm = self._slots[index]
        if shm.size < nbytes:
            shm.close()
            shm.unlink()
            shm = self._slots[index] = SharedMemory(create=True, size=nbytes)
        return shm

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise RunnerError(f"recognition process {self.pid} is gone ({exc})") from None

    def _receive(self, timeout: float | None, what: str, *, raw: bool = False) -> tuple:
        try:
            if timeout is not None and not self._conn.poll(timeout):
                raise RunnerError(f"recognition process {self.pid}: no answer to {what} within {timeout:g} s")
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise RunnerError(f"recognition process {self.pid} died (exit code {self._proc.exitcode}): {exc!r}") from None
        if reply[0] == "error" and not raw:
            raise RuntimeError(f"recognition process {self.pid}: {reply[1]}")
        return reply


def child_main(conn: Any, engine_settings: EngineSettings) -> None:
    """The child process: load the engine, then answer detect/embed requests until ``stop``."""
    import signal

    # The daemon's signal handling (drain on SIGTERM/SIGINT) is the parent's job: a Ctrl-C in a
    # terminal reaches the whole process group, and the child must stay up until told to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from streamd.faces.engine import FaceEngine

        single_threaded_opencv()  # before the engine, which may set a figure of its own
        engine = FaceEngine.from_settings(engine_settings)
        compute = FaceCompute(engine.detector, engine.embedder)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        from streamd.errors import ModelError

        is_model = isinstance(exc, ModelError)
        conn.send(("error", str(exc) if is_model else f"{type(exc).__name__}: {exc}", is_model))
        return
    conn.send(("ready", engine.dim, engine.fingerprint))
    attached: dict[str, SharedMemory] = {}
    images: list[np.ndarray] = []
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "stop":
            break
        try:
            if message[0] == "detect":
                images = [_view(attached, name, shape) for name, shape in message[1]]
                for stale in set(attached) - set(message[2]):  # blocks the parent replaced
                    attached.pop(stale).close()
                found = compute.detect(images, message[3] if len(message) > 3 else None)
                conn.send(("ok", found.faces, found.seconds, found.blur, found.looks))
            elif message[0] == "embed":
                done = compute.embed(images, message[1])
                conn.send(("ok", done.vectors, done.seconds))
            else:
                conn.send(("error", f"unknown request {message[0]!r}"))
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    images = []
    for shm in attached.values():
        shm.close()


def _view(attached: dict[str, SharedMemory], name: str, shape: tuple[int, ...]) -> np.ndarray:
    shm = attached.get(name)
    if shm is None:
        # The parent owns the block and unlinks it. A spawned child shares the parent's resource
        # tracker, so attaching registers nothing new and the child's exit frees nothing.
        shm = attached[name] = SharedMemory(name=name)
    return np.ndarray(shape, np.uint8, buffer=shm.buf)


#: Builds a runner for one worker (called again when a runner broke).
RunnerFactory = Callable[[], FaceRunner]

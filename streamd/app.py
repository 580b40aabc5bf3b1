"""The daemon: the one place that builds every part from settings, wires them, starts and stops them.

::

    app = App.from_settings(settings)   # engines, index holder, outputs, pipeline, cameras (nothing runs yet)
    app.start()                         # outputs, index, workers, HTTP, then the cameras
    ...
    app.stop(timeout)                   # one shutdown path (below); True when it all ended in time

Data flow: each camera's source (decoder thread) -> its bounded FrameQueue -> the recognition
workers -> per-camera TrackManager -> IdentityEvents -> every sink: the MQTT publisher, the
RecentEvents buffer behind /api/events/recent, snapshots to MQTT, and any ``on_event`` callback.

Shutdown, in dependency order, within one deadline:

1. the index and gallery watchers stop (no swap during the drain);
2. the cameras stop: a blocked read is interrupted, and each source closes its queue in a
   ``finally`` (the end marker);
3. the recognition pipeline finishes the frames still queued, flushes every camera's ``end``
   events and joins its workers;
4. the snapshot store writes the full frames still waiting for its writer thread;
5. the MQTT publisher sends what it can and leaves the rest in its spool;
6. the HTTP server stops last, so /metrics answers during the drain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamd.index.holder import IndexHolder
from streamd.metrics import Metrics
from streamd.pipeline.camera import FrameResult
from streamd.pipeline.recognition import EventSink, RecognitionPipeline
from streamd.server.recent import RecentEvents
from streamd.settings import Settings
from streamd.sources.config import CameraSettings
from streamd.sources.state import CameraState
from streamd.types import IdentityEvent

if TYPE_CHECKING:
    from streamd.faces.engine import FaceEngine
    from streamd.index.gallery_watch import GalleryWatcher
    from streamd.index.reload import IndexReloader
    from streamd.reload import CameraDiff
    from streamd.sinks.mqtt import MqttPublisher
    from streamd.snapshots import SnapshotStore
    from streamd.sources.supervisor import CameraSource

log = logging.getLogger(__name__)

#: Maps a source's status to the ``state`` of the retained MQTT camera status (schemas/camera_status.json).
_MQTT_STATE = {
    "idle": "connecting",
    "connecting": "connecting",
    "streaming": "streaming",
    "backoff": "backoff",
    "ended": "stopped",
    "stopped": "stopped",
}


def camera_status_payload(state: CameraState, enabled: bool = True) -> dict[str, Any]:
    """The retained ``<prefix>/<camera>/status`` payload for a camera's state (no password in it)."""
    payload = state.to_dict()
    payload.pop("camera", None)
    payload["state"] = _MQTT_STATE.get(state.status, "stopped") if enabled else "disabled"
    payload["retries"] = state.attempts
    payload["error"] = state.last_error if state.status != "streaming" else None
    return payload


@dataclass(frozen=True)
class _Camera:
    """A running camera: its settings and its source."""

    settings: CameraSettings
    source: CameraSource


class App:
    """streamd's parts wired together (see the module docstring). Build it with :meth:`from_settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        holder: IndexHolder,
        pipeline: RecognitionPipeline,
        recent: RecentEvents,
        publisher: MqttPublisher | None = None,
        http: Any = None,
        reloader: IndexReloader | None = None,
        gallery_watcher: GalleryWatcher | None = None,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.holder = holder
        self.pipeline = pipeline
        self.recent = recent
        self.publisher = publisher
        self.http = http
        self.reloader = reloader
        self.gallery_watcher = gallery_watcher
        self.snapshots = snapshots
        #: Replaced, never changed in place: readers (HTTP, the main loop) iterate it without a lock.
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()  # camera changes (SIGHUP) vs stop
        self._started = False
        self._stopped = False
        self._unsubscribe: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ building

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        on_event: EventSink | None = None,
        on_result: Callable[[FrameResult], None] | None = None,
    ) -> App:
        """Build every part the settings describe. Loads one engine (for the HTTP API and the model
        fingerprint) so that a bad model fails here; the workers' engines load in :meth:`start`.

        ``on_event`` receives every IdentityEvent and ``on_result`` every processed frame (tests,
        benchmarks), both from worker threads.
        """
        from streamd.event_log import log_event
        from streamd.faces.engine import FaceEngine
        from streamd.faces.quality import QualityGate
        from streamd.faces.regions import supports_regions
        from streamd.index.reload import IndexReloader
        from streamd.recognize import resolve_threshold
        from streamd.snapshots import SnapshotStore

        metrics = metrics if metrics is not None else Metrics(process=True)
        engine = FaceEngine.from_settings(settings.engine)
        holder = IndexHolder(metrics)
        reloader = IndexReloader(
            settings.index.dir,
            holder,
            expected_dim=engine.dim,
            expected_fingerprint=engine.fingerprint,
            metrics=metrics,
            debounce_s=settings.index.debounce_s,
        )
        snapshots = SnapshotStore.from_settings(settings.snapshots)
        recent = RecentEvents(settings.pipeline.recent_events)
        pipeline = RecognitionPipeline(
            runner_factory(settings),
            holder,
            tracking=settings.tracking,
            rec_threshold=resolve_threshold(settings.index.rec_threshold, engine),
            same_person_threshold=engine.same_person_threshold,
            topk=settings.index.rec_topk,
            margin=settings.index.margin,
            gate=QualityGate(settings.engine.quality),
            metrics=metrics,
            workers=settings.pipeline.worker_count(),
            batch_frames=settings.pipeline.batch_frames,
            snapshots=snapshots,
            sinks=[recent.add],
            on_result=on_result,
            # Planned only where the detector can detect crops: otherwise every sample is whole anyway,
            # and the detection metrics would claim regions that were never used.
            region_detection=settings.pipeline.region_detection if supports_regions(engine.detector) else None,
        )
        publisher = None
        if settings.mqtt.enabled:
            from streamd.sinks.mqtt import MqttPublisher

            publisher = MqttPublisher.from_settings(settings, metrics=metrics)
            pipeline.add_sink(publisher.publish_event)
            if snapshots is not None:
                pipeline.add_sink(SnapshotPublisher(snapshots.dir, publisher))
        pipeline.add_sink(log_event)  # after the publisher: a logged event was handed to it
        if on_event is not None:
            pipeline.add_sink(on_event)
        app = cls(
            settings,
            metrics=metrics,
            holder=holder,
            pipeline=pipeline,
            recent=recent,
            publisher=publisher,
            reloader=reloader,
            gallery_watcher=_gallery_watcher(settings) if settings.gallery.watch else None,
            snapshots=snapshots,
        )
        from streamd.server.app import create_server

        app.http = create_server(
            settings,
            metrics,
            holder,
            engine=engine,
            readiness={"engine": app._engine_ready, "mqtt": app._mqtt_ready},
            cameras=app.camera_states,
            recent=recent,
        )
        return app

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> App:
        """Start every part, outputs first and cameras last; raises (after undoing) when one fails."""
        if self._started:
            raise RuntimeError("App.start() called twice")
        self._started = True
        try:
            if self.publisher is not None:
                self.publisher.start()
                self._watch_index_for_mqtt(self.publisher)
            self._forget_people_leaving_the_index()
            if self.reloader is not None:
                if self.settings.index.watch:
                    self.reloader.start()
                else:
                    self.reloader.check()
            if self.gallery_watcher is not None:
                self.gallery_watcher.start()
            self.pipeline.start()
            if self.http is not None:
                self.http.start()
            for camera in self.settings.cameras:
                if camera.enabled:
                    self._start_camera(camera)
                else:
                    log.info("camera %r: disabled in the configuration", camera.name)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        log.info(
            "streamd running: %d camera(s), %d recognition worker(s) (%s)",
            len(self._cameras), self.settings.pipeline.worker_count(),
            self.settings.pipeline.resolved_mode(self.settings.engine.embedder.type),
        )
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """The one shutdown path (module docstring); True when every part ended within ``timeout`` s.

        ``timeout`` defaults to ``pipeline.stop_timeout_s``. Safe to call twice and from any thread.
        """
        with self._lock:
            if self._stopped:
                return True
            self._stopped = True
            cameras = list(self._cameras.values())
            self._cameras = {}
        budget = self.settings.pipeline.stop_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + budget
        ok = True

        def left(cap: float | None = None) -> float:
            remaining = max(0.0, deadline - time.monotonic())
            return remaining if cap is None else min(cap, remaining)

        for fn in self._unsubscribe:
            fn()
        if self.gallery_watcher is not None:
            ok &= self.gallery_watcher.stop(left(5.0))
        if self.reloader is not None:
            ok &= self.reloader.stop(left(5.0))
        ok &= _stop_sources([c.source for c in cameras], left())
        ok &= self.pipeline.stop(left())
        if self.snapshots is not None:  # the frames of the last `end` events still waiting
            ok &= self.snapshots.close(left(5.0))
        if self.publisher is not None:
            self.publisher.stop(left())
        if self.http is not None:
            self.http.stop(left(2.0) or 0.5)
        if not ok:
            log.warning("streamd stopped with parts still running after %.1f s", budget)
        return ok

    # ------------------------------------------------------------------ cameras

    def apply_cameras(self, cameras: Sequence[CameraSettings]) -> CameraDiff:
        """Start added cameras, stop removed ones, restart changed ones; the others keep running (SIGHUP)."""
        from streamd.reload import diff_cameras

        with self._lock:
            if self._stopped:
                raise RuntimeError("App.apply_cameras() after stop()")
            running = [c.settings for c in self._cameras.values()]
            wanted = [c for c in cameras if c.enabled]
            diff = diff_cameras(running, wanted)
            for name in (*diff.removed, *diff.changed):
                self._stop_camera(name)
            by_name = {c.name: c for c in wanted}
            for name in (*diff.changed, *diff.added):
                self._start_camera(by_name[name])
        self.settings = self.settings.model_copy(update={"cameras": list(cameras)})
        return diff

    def camera_states(self) -> list[CameraState]:
        """Every configured camera's state (disabled ones as ``stopped``), in configuration order."""
        running = {name: c.source.state for name, c in self._cameras.items()}
        return [
            running.get(c.name) or CameraState(camera=c.name, status="stopped", source=c.display_source)
            for c in self.settings.cameras
        ]

    def _start_camera(self, camera: CameraSettings) -> None:
        from streamd.sources.supervisor import CameraSource

        queue = self.pipeline.add_camera(camera)
        source = CameraSource(camera, self.metrics, queue=queue, on_state=self._on_camera_state)
        self._cameras = {**self._cameras, camera.name: _Camera(camera, source)}
        source.start()

    def _stop_camera(self, name: str, timeout: float = 10.0) -> None:
        camera = self._cameras.get(name)
        self._cameras = {k: v for k, v in self._cameras.items() if k != name}
        if camera is None:
            return
        camera.source.stop(timeout)
        # Its queue is closed now: wait until the workers flushed its tracks (`end` events).
        self.pipeline.remove_camera(name, timeout)

    def _on_camera_state(self, state: CameraState) -> None:
        if self.publisher is not None:
            self.publisher.publish_camera_status(state.camera, camera_status_payload(state))

    # ------------------------------------------------------------------ health

    def _engine_ready(self) -> str | None:
        dead = [w.name for w in self.pipeline.workers if not w.alive]
        if not self.pipeline.workers:
            return "recognition workers not started"
        return f"recognition worker(s) stopped: {', '.join(dead)}" if dead else None

    def _mqtt_ready(self) -> str | None:
        if self.publisher is None or self.publisher.connected:
            return None
        reason = self.publisher.last_error or "connecting"
        return f"not connected to the MQTT broker {self.settings.mqtt.host} ({reason})"

    def heartbeat(self) -> float:
        """time.monotonic() of the least recent recognition worker loop turn (the watchdog's progress check)."""
        return self.pipeline.heartbeat()

    @property
    def healthy(self) -> bool:
        """True while every recognition worker runs (the main loop's watchdog condition)."""
        return self._engine_ready() is None

    def _forget_people_leaving_the_index(self) -> None:
        """After a swap that removed labels, every camera's tracker stops naming those people."""
        from streamd.index.notify import on_label_change

        self._unsubscribe.append(
            on_label_change(self.holder, lambda change: self.pipeline.forget_labels(change.removed))
        )

    def _watch_index_for_mqtt(self, publisher: MqttPublisher) -> None:
        from streamd.index.notify import announce_index_state, labels_of, on_label_change

        publisher.set_labels(labels_of(self.holder.state))
        self._unsubscribe.append(on_label_change(self.holder, lambda change: publisher.set_labels(change.labels)))
        self._unsubscribe.append(
            announce_index_state(
                self.holder, publisher.publish_index_state, reloader=self.reloader, index_dir=self.settings.index.dir
            )
        )


class SnapshotPublisher:
    """An event sink: retains the best face of an identified person on ``<camera>/person/<label>/snapshot``."""

    def __init__(self, snapshot_dir: Path, publisher: MqttPublisher) -> None:
        self.dir = Path(snapshot_dir)
        self.publisher = publisher

    def __call__(self, event: IdentityEvent) -> None:
        if event.type not in ("identified", "update") or event.label is None or event.snapshot is None:
            return
        try:
            jpeg = (self.dir / event.snapshot).read_bytes()
        except OSError as exc:  # pruned meanwhile, disk trouble: the event itself still goes out
            log.debug("snapshot %s not published: %s", event.snapshot, exc.strerror)
            return
        self.publisher.publish_snapshot(event.camera, event.label, jpeg)


def runner_factory(settings: Settings) -> Callable[[], Any]:
    """Makes one worker's runner: an engine in the worker's thread, or in a child process."""
    from streamd.pipeline.runner import LocalRunner, ProcessRunner

    if settings.pipeline.resolved_mode(settings.engine.embedder.type) == "processes":
        return lambda: ProcessRunner(settings.engine)

    def local() -> LocalRunner:
        from streamd.faces.engine import FaceEngine

        return LocalRunner(FaceEngine.from_settings(settings.engine))

    return local


def _gallery_watcher(settings: Settings) -> GalleryWatcher:
    from streamd.faces.engine import FaceEngine
    from streamd.index.gallery_watch import GalleryWatcher

    assert settings.gallery.data_root is not None  # the settings validator guarantees it
    # An engine of its own: the watcher embeds in its thread while the workers use theirs.
    return GalleryWatcher(
        settings.gallery.data_root,
        settings.index.dir,
        FaceEngine.from_settings(settings.engine),
        index_type=settings.gallery.index_type,
        metric_type=settings.gallery.metric_type,
        multiple_faces=settings.gallery.multiple_faces,
        max_pixels=settings.engine.max_image_pixels,
        debounce_s=settings.gallery.debounce_s,
    )


def _stop_sources(sources: Sequence[CameraSource], timeout: float) -> bool:
    """Stop every camera at once (each interrupts its blocked read); True when all threads ended."""
    if not sources:
        return True
    threads = [threading.Thread(target=s.stop, args=(timeout,), name=f"stop-{s.name}") for s in sources]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 0.5)
    return not any(s.running for s in sources)

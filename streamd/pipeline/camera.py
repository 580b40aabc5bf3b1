"""One camera's recognition state: its TrackManager and its metric handles.

The worker that claims a camera's frame runs the camera's steps in this order::

    plan = camera.plan(frame)               # where to detect: whole frame, regions or nowhere
    faces = detections                      # from the runner, for this frame and plan
    requests = camera.update(frame, faces)  # quality gate + tracker: which faces to embed now
    events = camera.observe(frame, results) # vectors and index matches of those faces -> events

A camera is claimed by one worker at a time (see :mod:`streamd.pipeline.scheduler`), so these
calls come in order; the TrackManager's own lock makes a concurrent ``flush`` at shutdown safe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamd.faces.look import FaceLook
from streamd.metrics import Metrics
from streamd.pipeline.quality import Gate, assess
from streamd.pipeline.regions import DetectionPlan, RegionPlanner
from streamd.tracking.manager import EmbedResult, TrackManager
from streamd.tracking.tracker import EmbedRequest
from streamd.types import Face, Frame, IdentityEvent


@dataclass(frozen=True)
class FrameResult:
    """What recognition made of one sampled frame (for tests, benchmarks and debugging hooks).

    ``rejected`` holds the quality gate's reason per face (None = passed); ``embedded`` the
    indexes of the faces that were embedded; ``decided_at`` the wall-clock time the frame's
    events were ready (``decided_at - frame.captured_at`` is its frame-to-decision latency).
    """

    camera: str
    seq: int
    pts: float
    captured_at: float
    decided_at: float
    faces: tuple[Face, ...]
    rejected: tuple[str | None, ...]
    embedded: tuple[int, ...]
    events: tuple[IdentityEvent, ...] = field(default_factory=tuple)

    @property
    def latency_s(self) -> float:
        return self.decided_at - self.captured_at


class CameraRecognition:
    """A camera's tracker, identity decisions and per-camera metrics."""

    def __init__(
        self,
        camera: str,
        manager: TrackManager,
        gate: Gate | None,
        metrics: Metrics,
        planner: RegionPlanner | None = None,
    ) -> None:
        self.camera = camera
        self.manager = manager
        self.gate = gate
        self.planner = planner
        m = metrics
        self.m_detected = m.faces_detected.labels(camera)
        self.m_embedded = m.faces_embedded.labels(camera)
        self.m_rejected = m.faces_rejected
        self.m_detect = m.stage_seconds.labels(camera, "detect")
        self.m_embed = m.stage_seconds.labels(camera, "embed")
        self.m_search = m.stage_seconds.labels(camera, "search")
        self.m_decision = m.frame_to_decision_seconds.labels(camera)
        self.m_dropped = m.frames_dropped
        self.m_detections = {scope: m.detections.labels(camera, scope) for scope in ("full", "regions", "none")}
        self.m_coverage = m.detect_coverage.labels(camera)
        #: Faces and gate reasons of the frame between update() and observe().
        self._pending: tuple[Frame, tuple[Face, ...], tuple[str | None, ...]] | None = None

    def plan(self, frame: Frame) -> DetectionPlan:
        """Where to detect faces in ``frame``: the whole frame, or around the tracks and motion."""
        if self.planner is None:
            plan = DetectionPlan.everywhere()
        else:
            plan = self.planner.plan(frame.image, frame.pts, self.manager.expected_boxes(frame.pts))
        self.m_detections[plan.scope].inc()
        self.m_coverage.inc(plan.coverage)
        return plan

    def update(
        self,
        frame: Frame,
        faces: Sequence[Face],
        detect_s: float,
        blur: Sequence[float] | None = None,
        looks: Sequence[FaceLook | None] | None = None,
    ) -> list[EmbedRequest]:
        """Gate the detected faces and link them to tracks; the faces the tracker wants embedded.

        ``blur``: each face's sharpness when the runner measured it (else it is measured here);
        ``looks``: each face's look, when the runner measured it (it tells the tracker that
        another person took a track's place between two embeddings).
        """
        self.m_detect.observe(detect_s)
        faces = tuple(faces)
        if faces:
            self.m_detected.inc(len(faces))
        reasons, quality = assess(frame.image, faces, self.gate, blur)
        for reason in reasons:
            if reason is not None:
                self.m_rejected.labels(self.camera, reason).inc()
        self._pending = (frame, faces, tuple(reasons))
        return self.manager.update(frame, faces, quality, looks)

    def observe(
        self, frame: Frame, results: Mapping[int, EmbedResult], embed_s: float, search_s: float
    ) -> FrameResult:
        """Finish the frame with the embedded faces' vectors and matches; its result and events."""
        if results:
            self.m_embedded.inc(len(results))
            self.m_embed.observe(embed_s)
            self.m_search.observe(search_s)
        events = self.manager.observe(frame, results)
        decided_at = time.time()
        self.m_decision.observe(max(0.0, decided_at - frame.captured_at))
        pending, self._pending = self._pending, None
        faces, reasons = (pending[1], pending[2]) if pending is not None and pending[0] is frame else ((), ())
        return FrameResult(
            camera=self.camera,
            seq=frame.seq,
            pts=frame.pts,
            captured_at=frame.captured_at,
            decided_at=decided_at,
            faces=faces,
            rejected=reasons,
            embedded=tuple(sorted(results)),
            events=tuple(events),
        )

    def drop(self, frame: Frame, reason: str) -> None:
        """Count a claimed frame that could not be processed (engine error)."""
        self._pending = None
        self.m_dropped.labels(self.camera, reason).inc()

    def flush(self, now: float | None = None) -> list[IdentityEvent]:
        """End every open track (the camera stopped or the daemon shuts down)."""
        self._pending = None
        return self.manager.flush(now)

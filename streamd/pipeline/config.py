"""Settings of the recognition loop (``pipeline:`` in the config file).

Only pydantic is imported here, so loading settings never pulls in an engine.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RegionDetectionSettings(BaseModel):
    """Detect faces only around tracks and motion between full passes (see streamd.pipeline.regions)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(
        True,
        description="Detect in regions around live tracks and motion, with a full-frame pass every "
        "full_frame_interval_s; false: every sample is detected whole. YuNet only: the other detectors (dlib, "
        "SCRFD, Paddle) always detect the whole frame.",
    )
    full_frame_interval_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Stream seconds between full-frame passes: the longest a face that appears without "
        "moving (or that motion misses, e.g. beside a tracked person) waits to be found. Frigate has no such "
        "pass at all; 1 s costs 5 % more recognition CPU than 2 s on the benchmark's scenes.",
    )
    track_margin: float = Field(
        0.4,
        ge=0,
        le=5,
        description="How far around a track's last and predicted boxes to look, as a share of the box's width "
        "and height on each side (room for the face to move and turn between samples).",
    )
    motion: bool = Field(True, description="Also look where the picture changed since the previous sample.")
    motion_threshold: int = Field(
        25, ge=1, le=255, description="Grey-level change (0-255) of a pixel of the small motion frame that counts as motion."
    )
    motion_min_area: float = Field(
        0.0005,
        ge=0,
        le=1,
        description="Smallest moving blob that counts, as a share of the frame's area (ignores noise and rain).",
    )
    motion_margin: int = Field(
        48, ge=0, le=1000, description="Pixels added around each moving blob (a face next to a moving shoulder)."
    )
    max_coverage: float = Field(
        0.5,
        gt=0,
        le=1,
        description="When the regions would cover this share of the frame or more, the whole frame is "
        "detected instead (costs about the same, sees everything).",
    )


class PipelineSettings(BaseModel):
    """How many recognition workers run, how they run, and how the daemon stops."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Recognition workers (0 = one per CPU core). Each worker runs detection and embedding for "
        "one batch of frames at a time, so more workers use more cores; beyond the core count they only "
        "add memory (one engine each) and contention.",
    )
    worker_mode: Literal["auto", "threads", "processes"] = Field(
        "auto",
        description="threads: workers share the process; frames are handed over by reference, and the engines "
        "release the GIL while they compute. processes: each worker thread hands detection and embedding to a "
        "child process of its own through shared memory (a frame copy per sample, a process and an engine per "
        "worker); the engines' pre- and post-processing in Python then no longer competes with decoding and "
        "tracking for the GIL. Measured on 2 cores, whole pipeline (streamd bench pipeline): YuNet + "
        "MobileFaceNet kept up with 32 streams in processes against 30 in threads (24 against 21 with YuNet "
        "on OpenCV); dlib's pool alone 12.5 frames/s against 8.1, as its embedder holds the GIL. "
        "auto: processes for the dlib and onnx embedders, threads for the Paddle ones (not measured; each "
        "process would load its own Paddle runtime).",
    )
    batch_frames: int = Field(
        4,
        ge=1,
        le=64,
        description="Frames of different cameras one worker takes at once: their faces are embedded in one "
        "batch and searched in one index call. Higher amortises per-call costs over cameras; lower keeps "
        "each frame's latency independent of the others.",
    )
    stop_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="On SIGTERM/SIGINT, the time allowed to stop the cameras, finish the frames in flight, "
        "flush `end` events and hand events to MQTT or its spool. Parts still busy after it are abandoned.",
    )
    recent_events: int = Field(
        500, ge=1, le=1_000_000, description="Events kept in memory for GET /api/events/recent."
    )
    region_detection: RegionDetectionSettings = Field(
        default_factory=RegionDetectionSettings,
        description="Detection around tracks and motion instead of the whole frame on every sample.",
    )

    def resolved_mode(self, embedder_type: str) -> Literal["threads", "processes"]:
        """``worker_mode``, with ``auto`` resolved for the embedder in use (``engine.embedder.type``)."""
        if self.worker_mode != "auto":
            return self.worker_mode
        # dlib's compute_face_descriptor holds the GIL for most of its 100 ms per face, so threads
        # take turns. onnxruntime releases it, but around each call the detector's and the aligner's
        # Python (resizing, NMS, region crops, landmarks) holds it; in threads that competes with 20+
        # decoders and the trackers (whole pipeline on 2 cores: 30 streams in threads, 32 in processes).
        return "processes" if embedder_type in ("dlib", "onnx") else "threads"

    def worker_count(self) -> int:
        """``workers``, or the number of CPU cores this process may use when it is 0."""
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)

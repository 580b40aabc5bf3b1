"""All of streamd's Prometheus metrics, in a registry of our own that is passed in.

Code increments metrics where the thing happens (``metrics.frames_dropped.labels(camera, "queue_full").inc()``).
Tests and CLI tools that do not serve metrics use ``Metrics()`` as well: it is cheap and owns a
private registry, so nothing leaks into prometheus_client's global default registry.

Naming follows Prometheus conventions: ``streamd_`` prefix, base units in the name, ``_total``
on counters. No per-person label (cardinality): identities are counted by outcome only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

# Latency buckets from 1 ms to 10 s: per-stage times on a CPU box are 1-300 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metric families; one instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

        cam = ["camera"]
        # ---- sources
        self.frames_decoded = Counter("streamd_frames_decoded_total", "Frames decoded", cam, registry=r)
        self.frames_sampled = Counter("streamd_frames_sampled_total", "Frames sampled for recognition", cam, registry=r)
        self.frames_dropped = Counter(
            "streamd_frames_dropped_total", "Sampled frames dropped before recognition", cam + ["reason"], registry=r
        )
        self.stream_up = Gauge("streamd_stream_up", "1 while the camera is streaming", cam, registry=r)
        self.reconnects = Counter("streamd_reconnects_total", "Camera reconnect attempts", cam, registry=r)
        self.stream_errors = Counter(
            "streamd_stream_errors_total", "Decode and stream errors", cam + ["kind"], registry=r
        )
        self.stalled_seconds = Counter(
            "streamd_stalled_seconds_total", "Seconds a camera was down or stalled", cam, registry=r
        )
        # ---- faces
        self.faces_detected = Counter("streamd_faces_detected_total", "Faces detected", cam, registry=r)
        self.faces_rejected = Counter(
            "streamd_faces_rejected_total", "Faces rejected by the quality gate", cam + ["reason"], registry=r
        )
        self.faces_embedded = Counter("streamd_faces_embedded_total", "Faces embedded", cam, registry=r)
        self.detections = Counter(
            "streamd_detections_total",
            "Samples by where faces were looked for: full (the whole frame), regions (around tracks and "
            "motion), none (nothing moved, no track)",
            cam + ["scope"],
            registry=r,
        )
        self.detect_coverage = Counter(
            "streamd_detect_coverage_ratio_total",
            "Sum over samples of the share of the frame detection looked at (divide by "
            "streamd_detections_total for the mean)",
            cam,
            registry=r,
        )
        self.decisions = Counter(
            "streamd_decisions_total", "Identity decisions by outcome (known, unknown, tie)", cam + ["outcome"],
            registry=r,
        )
        self.track_splits = Counter(
            "streamd_track_splits_total",
            "Tracks ended because their new face is not the person they followed (another person took the place)",
            cam,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "streamd_stage_duration_seconds",
            "Time spent per pipeline stage (decode, detect, embed, search)",
            cam + ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_to_decision_seconds = Histogram(
            "streamd_frame_to_decision_seconds",
            "From frame capture to the identity decision",
            cam,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # ---- outputs
        self.events_published = Counter(
            "streamd_events_published_total", "Events published to MQTT", ["type"], registry=r
        )
        self.events_spooled = Counter(
            "streamd_events_spooled_total",
            "Events that waited in the on-disk spool because the broker was unreachable",
            registry=r,
        )
        self.events_dropped = Counter(
            "streamd_events_dropped_total", "Events dropped (too old, spool full)", ["reason"], registry=r
        )
        self.mqtt_connected = Gauge("streamd_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.spool_depth = Gauge("streamd_spool_events", "Events waiting in the on-disk spool", registry=r)
        # ---- index
        self.index_vectors = Gauge("streamd_index_vectors", "Vectors in the serving index", registry=r)
        self.index_labels = Gauge("streamd_index_labels", "Distinct labels in the serving index", registry=r)
        self.index_generation = Gauge("streamd_index_generation", "Generation of the serving index", registry=r)
        self.index_reloads = Counter(
            "streamd_index_reloads_total", "Index reload attempts by result (ok, refused)", ["result"], registry=r
        )
        self.index_loaded_timestamp = Gauge(
            "streamd_index_loaded_timestamp_seconds", "Unix time the serving index was loaded", registry=r
        )

"""Index hot reload under a running stream: the real App, the ONNX engine, the looping lane scene.

- The index is replaced 50 times (atomic saves, alternating contents) while the camera streams:
  every write is loaded, no frame fails, every sample is accounted for.
- An enrolled person is removed from the index while in view: their track's name is withdrawn
  at once (an ``update`` with label None), the other enrolled person keeps theirs.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from rtsp import wait_for
from streams import LaneScene, engine_settings, lane_scene, no_leaked_threads  # noqa: F401 (fixtures)

from streamd.app import App
from streamd.index.library import FeatureLibrary
from streamd.pipeline.camera import FrameResult
from streamd.settings import EngineSettings, Settings
from streamd.types import IdentityEvent

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("no_leaked_threads")]

CAMERA = "door"
PLACEHOLDER = "Placeholder_Person"  # a label in every other write: the label set changes too


def watching_settings(tmp_path: Path, engine: EngineSettings, lane_scene: LaneScene) -> Settings:  # noqa: F811
    index_dir = tmp_path / "index"
    shutil.copytree(lane_scene.index_dir, index_dir)
    return Settings(
        engine=engine,
        index={"dir": index_dir, "watch": True, "debounce_s": 0.1},
        mqtt={"enabled": False},
        http={"enabled": False},
        snapshots={"dir": tmp_path / "snapshots"},
        pipeline={"workers": 2},
        cameras=[{"name": CAMERA, "url": str(lane_scene.clip.path), "loop": True, "realtime": True, "sample_fps": 5}],
    )


class Recorder:
    """Every event and frame result the running App gives, from its worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[IdentityEvent] = []
        self.results: list[FrameResult] = []

    def event(self, event: IdentityEvent) -> None:
        with self.lock:
            self.events.append(event)

    def result(self, result: FrameResult) -> None:
        with self.lock:
            self.results.append(result)

    def snapshot(self) -> tuple[list[IdentityEvent], list[FrameResult]]:
        with self.lock:
            return list(self.events), list(self.results)


def metric(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


def test_fifty_index_replacements_under_a_running_stream_lose_no_sample(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene  # noqa: F811
) -> None:
    # given the daemon watching its index directory and the looping lane scene
    settings = watching_settings(tmp_path, engine_settings, lane_scene)
    index_dir = settings.index.dir
    original = FeatureLibrary.load(index_dir)
    rng = np.random.default_rng(7)
    extra = rng.standard_normal((1, original.dim)).astype(np.float32)
    extra /= np.linalg.norm(extra)
    record = Recorder()
    app = App.from_settings(settings, on_event=record.event, on_result=record.result).start()
    try:
        assert wait_for(lambda: len(record.snapshot()[1]) >= 10, 30, interval=0.1), "no frame processed"
        first_generation = app.holder.state.generation
        processed_before = len(record.snapshot()[1])
        # when the index is replaced 50 times, alternating with and without an extra person
        for k in range(50):
            lib = original.copy()
            if k % 2 == 0:
                lib.add(extra, [PLACEHOLDER])
            lib.save(index_dir)
            expected = first_generation + k + 1
            assert wait_for(lambda: app.holder.state.generation >= expected, 10, interval=0.02), f"write {k} not loaded"
        processed_during = len(record.snapshot()[1]) - processed_before
        loaded_ok = metric(app, "streamd_index_reloads_total", result="ok")
        refused = metric(app, "streamd_index_reloads_total", result="refused")
        final_generation = app.holder.state.generation
    finally:
        drained = app.stop(15.0)
    events, results = record.snapshot()
    # then every write was loaded once (50 swaps beyond the first), none refused, frames went on
    assert final_generation == first_generation + 50
    assert loaded_ok == 51 and refused == 0
    assert processed_during > 0
    # and no frame failed, and every sampled frame was either processed or dropped by the queue policy
    sampled = metric(app, "streamd_frames_sampled_total", camera=CAMERA)
    dropped = {r: metric(app, "streamd_frames_dropped_total", camera=CAMERA, reason=r) for r in ("error", "queue_full")}
    assert dropped["error"] == 0
    assert sampled == len(results) + dropped["queue_full"], (sampled, len(results), dropped)
    # and recognition was right throughout: enrolled lanes named as themselves, nobody as the placeholder
    for e in events:
        lane = lane_scene.lane_of(e)
        expected_label = lane_scene.labels[lane] if lane_scene.enrolled[lane] else None
        assert e.label in {expected_label, None}, f"lane {lane} named {e.label}"
    assert drained


def test_a_person_removed_from_the_index_while_in_view_is_no_longer_named(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene  # noqa: F811
) -> None:
    # given the daemon naming both enrolled people of the lane scene
    settings = watching_settings(tmp_path, engine_settings, lane_scene)
    index_dir = settings.index.dir
    removed, kept = lane_scene.labels[0], lane_scene.labels[2]
    record = Recorder()
    app = App.from_settings(settings, on_event=record.event, on_result=record.result).start()
    swapped_after: list[int] = []  # the last frame seq processed when the swap listener ran

    def named(label: str) -> IdentityEvent | None:
        return next((e for e in record.snapshot()[0] if e.type == "identified" and e.label == label), None)

    try:
        assert wait_for(lambda: named(removed) and named(kept), 40, interval=0.1), "enrolled people not named"
        track = named(removed).track_id  # type: ignore[union-attr]
        kept_track = named(kept).track_id  # type: ignore[union-attr]
        app.holder.add_listener(lambda state: swapped_after.append(max((r.seq for r in record.snapshot()[1]), default=-1)))
        # when that person is removed from the index while in view
        lib = FeatureLibrary.load(index_dir)
        lib.remove(lib.ids_for_label(removed))
        lib.save(index_dir)
        assert wait_for(lambda: bool(swapped_after), 10, interval=0.02), "the removal was not loaded"
        withdrawn = lambda: any(  # noqa: E731
            e.type == "update" and e.track_id == track and e.label is None for e in record.snapshot()[0]
        )
        assert wait_for(withdrawn, 10, interval=0.05), "the removed person's track was never withdrawn"
        labels_now = app.holder.state.library.label_set  # type: ignore[union-attr]
    finally:
        drained = app.stop(15.0)
    events, results = record.snapshot()
    # then the new index lacks them, and the results of frames after the swap name them at most in
    # the one sample that was in flight when the swap landed
    assert removed not in labels_now and kept in labels_now
    after = sorted((r for r in results if r.seq > swapped_after[0]), key=lambda r: r.seq)
    assert after, "no frame processed after the swap"
    late = [e for r in after[1:] for e in r.events if e.label == removed]
    assert late == [], f"named after the swap: {late}"
    withdrawal = [e for r in after for e in r.events if e.type == "update" and e.track_id == track]
    assert withdrawal and withdrawal[0].label is None
    # and the person still enrolled kept their name on their track
    assert not [e for e in events if e.track_id == kept_track and e.type == "update"]
    assert drained

"""The pipeline: settings section and the per-face quality figure."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.errors import ConfigError
from streamd.pipeline.config import PipelineSettings
from streamd.pipeline.quality import MIN_QUALITY, assess, face_quality
from streamd.settings import load_settings
from streamd.types import Face


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"workers": -1}, "config: pipeline.workers: Input should be greater than or equal to 0"),
        ({"worker_mode": "fork"}, "config: pipeline.worker_mode: Input should be 'auto', 'threads' or 'processes'"),
        ({"batch_frames": 0}, "config: pipeline.batch_frames: Input should be greater than or equal to 1"),
        ({"stop_timeout_s": 0}, "config: pipeline.stop_timeout_s: Input should be greater than 0"),
        ({"recent_events": 0}, "config: pipeline.recent_events: Input should be greater than or equal to 1"),
        ({"threads": 2}, "config: pipeline.threads: unknown key"),
    ],
)
def test_bad_pipeline_settings_name_the_key(section: dict, message: str) -> None:
    # when
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"pipeline": section})
    # then
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("mode", "embedder", "resolved"),
    [("auto", "dlib", "processes"), ("auto", "onnx", "processes"), ("auto", "paddlex", "threads"),
     ("auto", "paddle", "threads"),
     ("threads", "dlib", "threads"), ("processes", "onnx", "processes")],
)
def test_auto_worker_mode_runs_dlib_and_onnx_in_processes_and_paddle_in_threads(mode: str, embedder: str, resolved: str) -> None:
    assert PipelineSettings(worker_mode=mode).resolved_mode(embedder) == resolved


def test_workers_zero_means_one_per_usable_core() -> None:
    # given
    import os

    cores = len(os.sched_getaffinity(0))
    # then
    assert PipelineSettings(workers=0).worker_count() == cores
    assert PipelineSettings(workers=3).worker_count() == 3


RNG = np.random.default_rng(3)
SHARP = RNG.integers(0, 255, (200, 200, 3), dtype=np.uint8)
FLAT = np.full((200, 200, 3), 128, np.uint8)
FRONTAL = np.array([[70, 80], [130, 80], [100, 110], [75, 140], [125, 140]], np.float32)
TURNED = np.array([[70, 80], [130, 80], [128, 110], [75, 140], [125, 140]], np.float32)  # nose far to one side


def test_quality_is_highest_for_a_confident_sharp_frontal_face() -> None:
    # given
    best = Face((50, 50, 150, 150), 0.95, FRONTAL)
    # then each shortfall lowers the figure, which stays in [MIN_QUALITY, 1]
    q_best = face_quality(SHARP, best)
    assert 0.9 <= q_best <= 1.0
    assert face_quality(SHARP, Face((50, 50, 150, 150), 0.6, FRONTAL)) < q_best
    assert face_quality(SHARP, Face((50, 50, 150, 150), 0.95, TURNED)) < 0.8 * q_best
    assert face_quality(FLAT, best) == MIN_QUALITY


def test_assess_gives_gate_reasons_and_figures_only_to_faces_that_pass() -> None:
    # given a gate that rejects faint faces
    class Gate:
        def check(self, image: np.ndarray, face: Face, *, blur: float | None = None) -> str | None:
            return "low_score" if face.score < 0.5 else None

    faces = [Face((50, 50, 150, 150), 0.9, FRONTAL), Face((10, 10, 60, 60), 0.2)]
    # when
    reasons, quality = assess(SHARP, faces, Gate())
    # then
    assert reasons == [None, "low_score"]
    assert quality[0] is not None and quality[1] is None


def test_assess_uses_the_sharpness_the_runner_measured() -> None:
    # given a sharp face whose sharpness the runner measured as nearly flat
    class Gate:
        def __init__(self) -> None:
            self.blurs: list[float | None] = []

        def check(self, image: np.ndarray, face: Face, *, blur: float | None = None) -> str | None:
            self.blurs.append(blur)
            return None

    gate, face = Gate(), Face((50, 50, 150, 150), 0.95, FRONTAL)
    # when
    _, measured_here = assess(SHARP, [face], gate)
    _, given = assess(SHARP, [face], gate, [1.0])
    # then the given figure reaches the gate and the quality figure, instead of a new measurement
    assert gate.blurs[1] == 1.0 and gate.blurs[0] is not None and gate.blurs[0] > 40
    assert given[0] is not None and measured_here[0] is not None and given[0] < 0.1 * measured_here[0]
    # and a list that does not match the faces is refused
    with pytest.raises(ValueError, match="1 sharpness figures for 2 faces"):
        assess(SHARP, [face, face], gate, [1.0])

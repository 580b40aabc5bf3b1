"""Runners with the real ONNX engine (YuNet + MobileFaceNet): in the worker's thread and in a child process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamd.errors import ModelError
from streamd.faces.engine import FaceEngine
from streamd.faces.modelfile import DEV_MODEL_FILES
from streamd.faces.quality import blur_variance
from streamd.images import read_image
from streamd.pipeline.runner import LocalRunner, ProcessRunner, RunnerError
from streamd.settings import EngineSettings

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def engine_settings(models_dir: Path) -> EngineSettings:
    return EngineSettings(
        detector={"type": "onnx", "model_path": models_dir / DEV_MODEL_FILES["yunet"]},
        embedder={"type": "onnx", "model_path": models_dir / DEV_MODEL_FILES["mobilefacenet"]},
    )


@pytest.fixture(scope="module")
def frames(faces_dir: Path) -> list[np.ndarray]:
    """Two 1280x720 frames, each with a real face photo pasted at a different place."""
    out = []
    for k, name in enumerate(["Alex_Lacamoire/ageitgey_knn_train_img1.jpg", "Barack_Obama/ageitgey_obama.jpg"]):
        photo = read_image(faces_dir / "identities" / name)
        scale = 400 / max(photo.shape[:2])
        import cv2

        photo = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
        frame = np.full((720, 1280, 3), 90, np.uint8)
        x = 100 + 600 * k
        frame[100 : 100 + photo.shape[0], x : x + photo.shape[1]] = photo
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def child(engine_settings: EngineSettings) -> Iterator[ProcessRunner]:
    runner = ProcessRunner(engine_settings)
    yield runner
    runner.close()


def test_a_child_process_finds_and_embeds_the_same_faces_as_the_worker_thread(
    engine_settings: EngineSettings, frames: list[np.ndarray], child: ProcessRunner
) -> None:
    # given the same engine in this thread and in a child process
    local = LocalRunner(FaceEngine.from_settings(engine_settings))
    # when both detect a batch of two frames and embed every face found
    here, there = local.detect(frames), child.detect(frames)
    requests = [(i, list(faces)) for i, faces in enumerate(here.faces)]
    v_here, v_there = local.embed(requests), child.embed(requests)
    # then they agree: one face per frame, the same boxes and vectors
    assert [len(f) for f in here.faces] == [1, 1]
    assert [[f.box for f in faces] for faces in there.faces] == [[f.box for f in faces] for faces in here.faces]
    for a, b in zip(v_here.vectors, v_there.vectors):
        assert a.shape == (1, 128)
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(here.seconds) == 2 and v_there.seconds > 0


def test_each_face_comes_with_its_sharpness_measured_where_it_was_detected(
    engine_settings: EngineSettings, frames: list[np.ndarray], child: ProcessRunner
) -> None:
    # given the same frames detected in this thread and in a child process
    local = LocalRunner(FaceEngine.from_settings(engine_settings))
    here, there = local.detect(frames), child.detect(frames)
    # then every face has the sharpness the quality gate would measure on it
    for found in (here, there):
        assert found.blur is not None
        assert [len(b) for b in found.blur] == [len(f) for f in found.faces]
        for image, faces, blurs in zip(frames, found.faces, found.blur):
            assert list(blurs) == [blur_variance(image, face.box) for face in faces]
            assert all(b > 10 for b in blurs)  # real photos: sharp


def test_detection_regions_reach_the_child_process(
    engine_settings: EngineSettings, frames: list[np.ndarray], child: ProcessRunner
) -> None:
    # given the face of each frame, found whole by the worker thread's engine
    local = LocalRunner(FaceEngine.from_settings(engine_settings))
    whole = local.detect(frames).faces
    around = [tuple(int(v) + d for v, d in zip(faces[0].box, (-60, -60, 60, 60))) for faces in whole]
    # when the child detects the first frame around its face and the second nowhere
    there = child.detect(frames, [(around[0],), ()])
    here = local.detect(frames, [(around[0],), ()])
    # then it finds the first face only, as the worker thread does
    assert [len(f) for f in there.faces] == [1, 0]
    assert [[f.box for f in faces] for faces in there.faces] == [[f.box for f in faces] for faces in here.faces]
    # and a region away from the face finds nothing
    assert child.detect(frames[:1], [((900, 400, 1200, 700),)]).faces == ((),)


def test_faces_of_several_frames_are_embedded_as_one_batch_with_the_right_vectors(
    engine_settings: EngineSettings, frames: list[np.ndarray]
) -> None:
    # given
    local = LocalRunner(FaceEngine.from_settings(engine_settings))
    found = local.detect(frames)
    # when the two frames' faces are embedded together, then each alone
    together = local.embed([(0, found.faces[0]), (1, found.faces[1])])
    first = local.embed([(0, found.faces[0])])
    second = local.embed([(1, found.faces[1])])
    # then the batch gives each frame its own vectors
    np.testing.assert_allclose(together.vectors[0], first.vectors[0], atol=1e-5)
    np.testing.assert_allclose(together.vectors[1], second.vectors[0], atol=1e-5)
    assert float(together.vectors[0][0] @ together.vectors[1][0]) < 0.5  # two different people


def test_a_larger_frame_gets_a_larger_shared_memory_block(child: ProcessRunner, frames: list[np.ndarray]) -> None:
    # given a frame twice as large as before
    import cv2

    big = cv2.resize(frames[0], (2560, 1440))
    # when
    found = child.detect([big])
    # then its face is found at twice the coordinates
    small = child.detect([frames[0]])
    assert len(found.faces[0]) == 1
    np.testing.assert_allclose(np.array(found.faces[0][0].box), 2 * np.array(small.faces[0][0].box), rtol=0.05, atol=4)


def test_a_child_that_cannot_load_its_engine_reports_why(engine_settings: EngineSettings, tmp_path: Path) -> None:
    # given an embedder path that does not exist
    missing = tmp_path / "missing.onnx"
    bad = engine_settings.model_copy(update={"embedder": engine_settings.embedder.model_copy(update={"model_path": missing})})
    # when
    with pytest.raises(ModelError) as err:
        ProcessRunner(bad)
    # then the message is the engine's own one line, naming the file
    assert str(err.value).startswith(f"{missing}: model file not found")
    assert "\n" not in str(err.value)


def test_a_dead_child_is_reported_and_its_shared_memory_released(
    engine_settings: EngineSettings, frames: list[np.ndarray]
) -> None:
    # given a child that has seen a frame
    runner = ProcessRunner(engine_settings)
    runner.detect(frames[:1])
    blocks = [Path("/dev/shm") / shm.name.lstrip("/") for shm in runner._slots]
    assert all(b.exists() for b in blocks)
    # when it is killed
    os.kill(runner.pid, signal.SIGKILL)
    with pytest.raises(RunnerError) as err:
        runner.detect(frames[:1])
    runner.close()
    # then the worker is told it died, and closing frees the shared memory
    assert "died" in str(err.value) or "gone" in str(err.value)
    assert not any(b.exists() for b in blocks)

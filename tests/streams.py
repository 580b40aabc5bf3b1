"""Fixtures for the stream pipeline tests: the ONNX engine, a lane scene made from real faces, indexes.

The *lane scene* puts one person in each of four lanes of a 1280x720 H.264 clip for its whole
length: enrolled, never-enrolled, enrolled, never-enrolled, from left to right. A track's lane
(the x of its box centre) therefore tells who it is, whatever the stream's clock (an RTSP client
joins a looping stream anywhere). Clips and indexes are cached in the system temp dir by their
parameters, like tests/rtsp.py's clips (a concurrent pytest run prunes older basetemps).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamd.bench.scenes import Appearance, Role, SceneClip, load_truth, person_images, render_scene, save_truth
from streamd.bench.scenes import wall_image, write_gallery
from streamd.faces.modelfile import DEV_MODEL_FILES
from streamd.settings import EngineSettings
from streamd.types import IdentityEvent

LANES = 4
SIZE = (1280, 720)
#: (label, enrolled) per lane, left to right. LFW people with enough photos for a 4-image gallery.
CAST = (("Gerhard_Schroeder", True), ("Hugo_Chavez", False), ("Junichiro_Koizumi", True), ("Hamid_Karzai", False))
HAMILTON = Path("video/faces/ageitgey_short_hamilton_clip.mp4")


@dataclass(frozen=True)
class LaneScene:
    clip: SceneClip
    index_dir: Path
    labels: tuple[str, ...]  # per lane
    enrolled: tuple[bool, ...]

    def lane_of(self, event: IdentityEvent) -> int:
        centre = (event.box[0] + event.box[2]) / 2
        return min(LANES - 1, max(0, int(centre // (SIZE[0] / LANES))))


def cache_dir(key: object) -> Path:
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"streamd-test-pipeline-{os.getuid()}" / digest
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def onnx_settings(models_dir: Path) -> EngineSettings:
    return EngineSettings(
        detector={"type": "onnx", "model_path": models_dir / DEV_MODEL_FILES["yunet"]},
        embedder={"type": "onnx", "model_path": models_dir / DEV_MODEL_FILES["mobilefacenet"]},
    )


def build_index(engine_settings: EngineSettings, gallery: Path, folder: Path) -> Path:
    """The index of ``gallery`` made with the engine, built once into ``folder`` (atomically)."""
    from streamd.faces.engine import FaceEngine
    from streamd.index.builder import build_index as build

    index_dir = folder / "index"
    if not (index_dir / "vector.index").exists():
        build(FaceEngine.from_settings(engine_settings), gallery, index_dir)
    return index_dir


@pytest.fixture(scope="session")
def engine_settings(models_dir: Path) -> EngineSettings:
    return onnx_settings(models_dir)


@pytest.fixture(scope="session")
def lane_scene(engine_settings: EngineSettings, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LaneScene:
    """12 s of the four-lane scene (GOP 25) and the index of its two enrolled people."""
    seconds = 12.0
    folder = cache_dir(("lanes", CAST, seconds, engine_settings.model_dump_json()))
    truth = folder / "scene.json"
    if not truth.exists():
        work = tmp_path_factory.mktemp("lanes")
        roles = []
        for label, enrolled in CAST:
            images = person_images(faces_dir / "identities" / label)
            roles.append(Role(label, enrolled, images[-1], tuple(images[:4]) if enrolled else ()))
        write_gallery(roles, work / "gallery")
        from streamd.faces.engine import FaceEngine

        detector = FaceEngine.from_settings(engine_settings).detector
        plan = [Appearance(label, enrolled, 0.2, seconds - 0.2, lane) for lane, (label, enrolled) in enumerate(CAST)]
        clip = render_scene(roles, work / "scene.mp4", detector.detect, wall=wall_image(faces_dir), seconds=seconds,
                            lanes=LANES, seed=5, appearances=plan)
        build_index(engine_settings, work / "gallery", work)
        save_truth(clip, work / "scene.json")
        if not folder.exists():
            shutil.move(str(work), str(folder))  # whole: a concurrent run sees all of it or nothing
    return LaneScene(load_truth(truth), folder / "index", tuple(c[0] for c in CAST), tuple(c[1] for c in CAST))


@pytest.fixture(scope="session")
def hamilton_index(engine_settings: EngineSettings, faces_dir: Path) -> Path:
    """The index of Lin-Manuel Miranda (1 photo) and Alex Lacamoire (3 photos), the Hamilton clip's people."""
    folder = cache_dir(("hamilton", engine_settings.model_dump_json()))
    gallery = folder / "gallery"
    for source in (faces_dir / "identities_small" / "Lin_Manuel_Miranda", faces_dir / "identities" / "Alex_Lacamoire"):
        target = gallery / "images" / source.name
        target.mkdir(parents=True, exist_ok=True)
        for image in person_images(source):
            if not (target / image.name).exists():
                shutil.copyfile(image, target / image.name)
    return build_index(engine_settings, gallery, folder)


@pytest.fixture(scope="session")
def hamilton_clip(faces_dir: Path) -> Path:
    return faces_dir / HAMILTON


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fails the test when it leaves threads behind (cameras, workers, servers)."""
    from rtsp import camera_threads, wait_for

    before = set(threading.enumerate())
    yield
    leaked = lambda: [t for t in threading.enumerate() if t not in before and t.is_alive()]  # noqa: E731
    assert wait_for(lambda: not leaked(), 10), f"leaked threads: {leaked()}"
    assert not camera_threads()

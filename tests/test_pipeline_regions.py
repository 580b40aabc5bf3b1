"""Region detection: where each sample is detected, and that a region finds what the full frame finds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamd.faces.regions import detect_in_regions, grid_step, shifted, supports_regions
from streamd.pipeline.config import RegionDetectionSettings
from streamd.pipeline.regions import DetectionPlan, MotionDetector, RegionPlanner, merge_rects
from streamd.types import Face

W, H = 1280, 720


def still(value: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = np.full((H, W, 3), value, np.uint8)
    frame += rng.integers(0, 6, frame.shape, dtype=np.uint8)  # sensor noise below the threshold
    return frame


def with_square(x: int, y: int, size: int = 80) -> np.ndarray:
    frame = still()
    frame[y : y + size, x : x + size] = 250
    return frame


# --------------------------------------------------------------------------- geometry


def test_merge_rects_joins_overlapping_chains_and_keeps_apart_the_rest():
    rects = [(0, 0, 10, 10), (5, 5, 20, 20), (18, 18, 30, 30), (100, 100, 110, 110)]
    assert merge_rects(rects) == [(0, 0, 30, 30), (100, 100, 110, 110)]
    # A union that grows onto a rectangle kept earlier absorbs it too.
    assert merge_rects([(0, 0, 10, 10), (50, 0, 60, 10), (8, 0, 52, 5)]) == [(0, 0, 60, 10)]
    assert merge_rects([(0, 0, 10, 10), (10, 0, 20, 10)]) == [(0, 0, 10, 10), (10, 0, 20, 10)]  # touching only
    assert merge_rects([(5, 5, 5, 9)]) == []  # empty


def test_grid_step_is_whole_detector_strides_in_frame_pixels():
    assert grid_step(0.5) == 64  # 1280x720 into YuNet's 640
    assert grid_step(1 / 3) == 96  # 1920x1080
    assert grid_step(1.0) == 32
    assert grid_step(0.47) == 1  # no whole number: no alignment


def test_shifted_moves_box_and_landmarks():
    face = Face((1, 2, 11, 12), 0.9, np.zeros((5, 2), np.float32))
    moved = shifted(face, 100, 50)
    assert moved.box == (101, 52, 111, 62)
    assert np.allclose(moved.landmarks, [[100, 50]] * 5)
    assert moved.score == face.score


# --------------------------------------------------------------------------- motion


def test_motion_detector_boxes_what_moved_and_ignores_noise():
    motion = MotionDetector(threshold=25, min_area=0.0005)
    assert motion.boxes(still()) is None  # nothing to compare with yet
    assert motion.boxes(still()) == []  # noise only
    boxes = motion.boxes(with_square(600, 300))
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= 600 and y1 <= 300 and x2 >= 680 and y2 >= 380  # covers the square
    assert (x2 - x1) * (y2 - y1) < 0.05 * W * H  # and not much more


def test_motion_detector_starts_over_when_the_frame_size_changes():
    motion = MotionDetector(threshold=25, min_area=0.0005)
    motion.boxes(still())
    assert motion.boxes(cv2.resize(still(), (640, 360))) is None


# --------------------------------------------------------------------------- planning


def planner(**overrides) -> RegionPlanner:
    return RegionPlanner(RegionDetectionSettings(**overrides))


def test_first_sample_is_detected_whole_then_nothing_when_nothing_moves():
    p = planner()
    assert p.plan(still(), 0.0, []) == DetectionPlan.everywhere()
    plan = p.plan(still(), 0.2, [])
    assert plan.scope == "none" and plan.regions == () and plan.coverage == 0.0


def test_tracks_are_looked_at_with_a_margin():
    p = planner(track_margin=0.5)
    p.plan(still(), 0.0, [])
    plan = p.plan(still(), 0.2, [(600.0, 300.0, 700.0, 420.0)])
    assert plan.scope == "regions"
    assert plan.regions == ((550, 240, 750, 480),)
    assert plan.coverage == pytest.approx(200 * 240 / (W * H))


def test_motion_is_looked_at():
    p = planner(motion_margin=10)
    p.plan(still(), 0.0, [])
    plan = p.plan(with_square(200, 100), 0.2, [])
    assert plan.scope == "regions"
    (x1, y1, x2, y2), = plan.regions
    assert x1 <= 200 and y1 <= 100 and x2 >= 280 and y2 >= 180


def test_a_full_pass_every_interval_and_after_a_gap():
    p = planner(full_frame_interval_s=1.0)
    box = [(600.0, 300.0, 700.0, 420.0)]
    scopes = [p.plan(still(), t / 5, box).scope for t in range(11)]
    assert scopes == ["full", "regions", "regions", "regions", "regions", "full"] + ["regions"] * 4 + ["full"]
    assert p.plan(still(), 0.5, box).scope == "full"  # stream time went backwards: a new connection
    assert p.plan(still(), 0.7, box).scope == "regions"
    assert p.plan(still(), 5.0, box).scope == "full"  # a gap in the stream


def test_regions_covering_most_of_the_frame_become_a_full_pass():
    p = planner(max_coverage=0.3)
    p.plan(still(), 0.0, [])
    big = [(0.0, 0.0, 500.0, 500.0), (700.0, 100.0, 1200.0, 600.0)]
    assert p.plan(still(), 0.2, big).scope == "full"


def test_disabled_always_detects_the_whole_frame():
    p = planner(enabled=False)
    assert {p.plan(still(), t / 5, []).scope for t in range(5)} == {"full"}


def test_without_motion_only_tracks_and_the_interval_count():
    p = planner(motion=False)
    p.plan(still(), 0.0, [])
    assert p.plan(with_square(200, 100), 0.2, []).scope == "none"


# --------------------------------------------------------------------------- real detectors


def face_frame(faces_dir: Path) -> np.ndarray:
    """Three real faces on a grey 1280x720 frame."""
    from streamd.images import read_image

    frame = np.full((H, W, 3), 90, np.uint8)
    people = sorted(p for p in (faces_dir / "identities").iterdir() if p.is_dir())[:3]
    for k, person in enumerate(people):
        photo = cv2.resize(read_image(sorted(person.glob("*.jpg"))[0]), (250, 250))
        frame[200:450, 100 + 400 * k : 350 + 400 * k] = photo
    return frame


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def check_regions_find_the_full_frames_faces(detector, frame: np.ndarray, *, min_iou: float = 0.85) -> None:
    """Regions around the full frame's faces find the same faces (boxes and landmarks)."""
    full = detector.detect(frame)
    assert len(full) == 3
    around = [(int(f.box[0]) - 80, int(f.box[1]) - 80, int(f.box[2]) + 80, int(f.box[3]) + 80) for f in full]
    found = detect_in_regions(detector, frame, around)
    assert len(found) == 3
    for face in full:
        best = max(found, key=lambda g: iou(face.box, g.box))
        assert iou(face.box, best.box) > min_iou
        assert np.abs(face.landmarks - best.landmarks).max() < 0.1 * face.width
    # One region: only its face. Nowhere: nothing. None: the whole frame.
    assert len(detect_in_regions(detector, frame, around[:1])) == 1
    assert detect_in_regions(detector, frame, ()) == []
    assert len(detect_in_regions(detector, frame, None)) == 3


def test_yunet_finds_the_same_faces_in_regions_as_in_the_full_frame(models_dir: Path, faces_dir: Path):
    from streamd.faces.modelfile import DEV_MODEL_FILES
    from streamd.faces.onnx_engine import YuNetDetector

    detector = YuNetDetector(models_dir / DEV_MODEL_FILES["yunet"])
    assert supports_regions(detector)
    assert detector.detection_scale((720, 1280, 3)) == 0.5
    check_regions_find_the_full_frames_faces(detector, face_frame(faces_dir))


def test_dlib_always_detects_the_whole_frame():
    # HOG scans an 80-pixel window over a pyramid: in crops around moving faces it missed a face in a
    # quarter of the samples of the benchmark's clips (turned heads found only with more context), so
    # dlib is not offered region detection.
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from streamd.faces.dlib_engine import DlibDetector

    assert not supports_regions(DlibDetector(max_side=960))


def test_a_detector_without_region_support_gets_the_whole_frame():
    class WholeFrameOnly:
        name = "whole"

        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def detect(self, image: np.ndarray) -> list[Face]:
            self.shapes.append(image.shape)
            return [Face((10, 10, 50, 50), 0.9)]

    detector = WholeFrameOnly()
    assert not supports_regions(detector)
    assert len(detect_in_regions(detector, still(), [(0, 0, 100, 100)])) == 1
    assert detector.shapes == [(H, W, 3)]

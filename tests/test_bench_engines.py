"""`streamd bench engines` through the CLI with the real models (one timed run each: a smoke run, not a speed test)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from streamd.bench.engines import letterbox
from streamd.cli import cli


def test_letterbox_keeps_the_aspect_and_pads_with_black():
    # given a tall grey image
    image = np.full((400, 200, 3), 128, dtype=np.uint8)

    # when fitted into 1280x720
    frame = letterbox(image)

    # then it is scaled to 360x720, centred, with black bars left and right
    assert frame.shape == (720, 1280, 3)
    assert frame[360, 640].tolist() == [128, 128, 128]
    assert frame[360, 10].tolist() == [0, 0, 0] and frame[360, 1270].tolist() == [0, 0, 0]


@pytest.mark.shared
def test_bench_engines_times_every_backend_and_says_why_one_is_missing(tmp_path, models_dir, faces_dir):
    # given the real models, except a SCRFD 2.5g path that does not exist
    missing = tmp_path / "det_2.5g.onnx"
    out = tmp_path / "bench.json"
    args = [
        "bench", "engines", "--repeat", "1", "--warmup", "0",
        "--image", str(faces_dir / "group/insightface/t1.jpg"),
        "--yunet", str(models_dir / "yunet_2023mar/face_detection_yunet_2023mar.onnx"),
        "--scrfd-500m", str(models_dir / "scrfd_det_500m/det_500m.onnx"),
        "--scrfd-2.5g", str(missing),
        "--mobilefacenet", str(models_dir / "mobilefacenet_foamliu/MobileFaceNet.onnx"),
        "--json", str(out),
    ]

    # when the benchmark runs
    result = CliRunner().invoke(cli, args)

    # then every available backend has a figure and the missing one says why
    assert result.exit_code == 0, result.output
    timings = {t["backend"]: t for t in json.loads(out.read_text())["timings"]}
    for name in ("dlib hog", "onnx yunet", "onnx scrfd 500m", "onnx mobilefacenet", "dlib resnet"):
        assert timings[name]["error"] is None and timings[name]["median_ms"] > 0
    assert timings["onnx yunet"]["faces"] == 6
    assert f"unavailable: {missing}: model file not found" in result.output

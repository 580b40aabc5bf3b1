"""Camera settings: what users write in `cameras:` and the errors they read."""

from __future__ import annotations

import json

import pytest

from streamd.errors import ConfigError
from streamd.settings import load_settings
from streamd.sources.config import CameraSettings


def _camera(**kw: object) -> dict:
    return {"name": "front", "url": "rtsp://cam/stream1", **kw}


def test_a_minimal_rtsp_camera_gets_documented_defaults() -> None:
    # given / when
    cam = CameraSettings(name="front", url="rtsp://10.0.0.5/stream1")

    # then
    assert cam.kind == "network"
    assert (cam.sample_fps, cam.transport, cam.decode, cam.drop_policy) == (5.0, "tcp", "auto", "drop_oldest")
    assert cam.backoff.initial_s <= cam.backoff.max_s
    assert cam.is_realtime


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"url": "rtsp://h/x"}, "network"),
        ({"url": "https://h/live.m3u8"}, "network"),
        ({"url": "/videos/door.mp4"}, "file"),
        ({"url": "file:///videos/door.mp4"}, "file"),
        ({"device": "/dev/video0"}, "usb"),
    ],
)
def test_the_source_kind_follows_url_or_device(fields: dict, kind: str) -> None:
    # given / when
    cam = CameraSettings(name="c", **fields)

    # then
    assert cam.kind == kind


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"name": "front/door", "url": "rtsp://h/x"}, "camera name 'front/door' must be 1-64 characters"),
        ({"name": "a+b", "url": "rtsp://h/x"}, "camera name 'a+b' must be"),
        ({"name": "front"}, "give exactly one of url (stream or file) or device (USB)"),
        ({"name": "front", "url": "rtsp://h/x", "device": "/dev/video0"}, "give exactly one of url"),
        (_camera(url="  "), "url is empty"),
        (_camera(loop=True), "loop applies to video files only, not to network sources"),
        (_camera(sample_fps=0), "sample_fps: Input should be greater than 0"),
        (_camera(transport="http"), "transport: Input should be 'tcp' or 'udp'"),
        (_camera(drop_policy="block"), "drop_policy: Input should be 'drop_oldest' or 'drop_newest'"),
        (_camera(backoff={"initial_s": 10, "max_s": 5}), "backoff.max_s (5) must be >= backoff.initial_s (10)"),
        (_camera(backoff={"initial": 1}), "cameras.0.backoff.initial: unknown key"),
        (_camera(fps=5), "cameras.0.fps: unknown key"),
        (_camera(zones=[{"name": "porch", "polygon": [[0, 0], [10, 0]]}]), "zone polygon needs at least 3 [x, y] points, got 2"),
        (_camera(zones=[{"name": "a b", "polygon": [[0, 0], [1, 0], [1, 1]]}]), "zone name 'a b' must be"),
        (
            _camera(zones=[{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}] * 2),
            "zone names must be unique, repeated: z",
        ),
        (_camera(masks=[[[0, 0], [-5, 0], [1, 1]]]), "mask 0 has a negative coordinate [-5, 0]"),
        (
            _camera(detect_width=640, detect_height=360, masks=[[[0, 0], [700, 0], [1, 1]]]),
            "mask 0 point [700, 0] is outside the 640x360 detection frame",
        ),
        (_camera(usb={"width": 640}), "usb.width and usb.height must be given together"),
    ],
)
def test_bad_camera_settings_name_the_key_and_the_problem(camera: dict, message: str) -> None:
    # given a config with one bad camera
    overrides = {"cameras": [camera]}

    # when / then
    with pytest.raises(ConfigError) as err:
        load_settings(overrides=overrides)
    assert message in str(err.value)
    assert str(err.value).startswith("config: cameras")


def test_camera_names_must_be_unique() -> None:
    # given
    cameras = [_camera(), _camera(url="/videos/x.mp4"), {"name": "back", "url": "rtsp://h/y"}]

    # when / then
    with pytest.raises(ConfigError, match="camera names must be unique, repeated: front"):
        load_settings(overrides={"cameras": cameras})


def test_cameras_load_from_yaml_with_zones_masks_and_usb(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given
    config = tmp_path / "streamd.yaml"
    config.write_text(
        """
cameras:
  - name: front_door
    url: rtsp://viewer:secret@192.168.1.20:554/stream1
    transport: udp
    detect_width: 1280
    zones:
      - name: porch
        polygon: [[0, 300], [640, 300], [640, 720]]
    masks:
      - [[1000, 0], [1280, 0], [1280, 200]]
  - name: desk
    device: /dev/video0
    usb: {width: 1280, height: 720, fps: 30, pixel_format: mjpeg}
""",
        encoding="utf-8",
    )

    # when
    settings = load_settings(config)

    # then
    front, desk = settings.cameras
    assert front.zones[0].name == "porch" and front.zones[0].polygon[2] == (640.0, 720.0)
    assert front.masks[0][0] == (1000.0, 0.0)
    assert desk.kind == "usb" and desk.usb.pixel_format == "mjpeg"


def test_settings_dumps_and_repr_never_show_the_camera_password() -> None:
    # given
    cam = CameraSettings(name="front", url="rtsp://admin:hunter22@cam:554/live")

    # when
    dumped = json.dumps(cam.model_dump(mode="json"))
    shown = repr(cam)

    # then
    assert "hunter22" not in dumped and "hunter22" not in shown
    assert "rtsp://admin:***@cam:554/live" in dumped and "rtsp://admin:***@cam:554/live" in shown
    assert cam.url == "rtsp://admin:hunter22@cam:554/live"  # the real value is still used to connect


@pytest.mark.parametrize(
    ("detect", "source", "expected"),
    [
        ({}, (1920, 1080), None),
        ({"detect_width": 1280}, (1920, 1080), (1280, 720)),
        ({"detect_height": 360}, (1280, 720), (640, 360)),
        ({"detect_width": 641}, (1280, 720), (641, 360)),
        ({"detect_width": 640, "detect_height": 480}, (1280, 720), (640, 480)),
        ({"detect_width": 1280}, (1280, 720), None),
    ],
)
def test_detection_size_keeps_the_aspect_ratio_when_one_side_is_given(detect, source, expected) -> None:  # type: ignore[no-untyped-def]
    # given
    cam = CameraSettings(name="c", url="rtsp://h/x", **detect)

    # when / then
    assert cam.detect_size(*source) == expected


def test_files_are_paced_like_cameras_only_when_looping_unless_told() -> None:
    # given / when / then
    assert CameraSettings(name="c", url="a.mp4", loop=True).is_realtime
    assert not CameraSettings(name="c", url="a.mp4").is_realtime
    assert CameraSettings(name="c", url="a.mp4", realtime=True).is_realtime

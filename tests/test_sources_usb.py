"""USB/V4L2 cameras as far as a machine without a camera allows: clear errors, backoff, options."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rtsp import camera_threads, wait_for

from streamd.errors import SourceError
from streamd.metrics import Metrics
from streamd.sources.config import CameraSettings
from streamd.sources.supervisor import CameraSource
from streamd.sources.usb import open_usb, v4l2_options

MISSING = "/dev/video-streamd-test-missing"


@pytest.fixture(autouse=True)
def _no_leaked_camera_threads() -> Iterator[None]:
    yield
    assert wait_for(lambda: not camera_threads(), 5), f"leaked threads: {camera_threads()}"


def _usb(device: str, **usb: object) -> CameraSettings:
    return CameraSettings(name="desk", device=device, usb=usb, connect_timeout_s=3,
                          backoff={"initial_s": 30, "max_s": 30})


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize(
    ("device", "message"),
    [
        (
            MISSING,
            (
                f"camera 'desk': USB device {MISSING} not found (is the camera plugged in? "
                "`v4l2-ctl --list-devices` lists the devices present)"
            ),
        ),
        ("{tmp}/not-a-device", "camera 'desk': {tmp}/not-a-device is not a video device (not a character device)"),
    ],
)
def test_a_device_that_is_not_there_is_a_clear_error(backend: str, device: str, message: str, tmp_path: Path) -> None:
    # given
    device = device.format(tmp=tmp_path)
    (tmp_path / "not-a-device").write_text("x")

    # when
    with pytest.raises(SourceError) as err:
        open_usb(_usb(device, backend=backend))

    # then
    assert str(err.value) == message.format(tmp=tmp_path)
    assert err.value.kind == "device"


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (
            "pyav",
            (
                "camera 'desk': cannot open /dev/null: Inappropriate ioctl for device (is it a V4L2 capture node, "
                "not in use by another program?)"
            ),
        ),
        ("opencv", "camera 'desk': OpenCV cannot open USB device /dev/null"),
    ],
)
def test_a_character_device_that_is_no_camera_is_refused(backend: str, message: str) -> None:
    # given /dev/null: a character device, but no V4L2 camera

    # when
    with pytest.raises(SourceError) as err:
        open_usb(_usb("/dev/null", backend=backend))

    # then
    assert str(err.value) == message
    assert err.value.kind == "device"


def test_a_missing_usb_camera_enters_backoff_instead_of_crashing() -> None:
    # given
    metrics = Metrics()
    source = CameraSource(_usb(MISSING), metrics)

    # when
    source.start()
    in_backoff = wait_for(lambda: source.state.status == "backoff", 5)
    state = source.state
    source.stop()

    # then
    assert in_backoff
    assert state.last_error is not None and f"USB device {MISSING} not found" in state.last_error
    assert state.next_retry_at is not None and state.attempts == 1
    assert metrics.registry.get_sample_value(
        "streamd_stream_errors_total", {"camera": "desk", "kind": "device"}
    ) == 1.0
    assert source.state.status == "stopped"


@pytest.mark.parametrize(
    ("usb", "options"),
    [
        ({}, {}),
        ({"width": 1280, "height": 720}, {"video_size": "1280x720"}),
        ({"fps": 30}, {"framerate": "30"}),
        ({"fps": 7.5, "pixel_format": "mjpeg"}, {"framerate": "7.5", "input_format": "mjpeg"}),
    ],
)
def test_usb_settings_become_ffmpeg_v4l2_options(usb: dict, options: dict) -> None:
    # given / when / then
    assert v4l2_options(_usb("/dev/video0", **usb)) == options

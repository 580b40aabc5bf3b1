"""USB/V4L2 cameras (``device: /dev/videoN``), through PyAV's v4l2 input or OpenCV.

A missing or unusable device is a :class:`SourceError` of kind ``device`` whose message says what
to check; the supervisor then backs off and retries, so a camera plugged in later is picked up
by itself.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from streamd.errors import SourceError
from streamd.sources.config import CameraSettings
from streamd.sources.pyav_source import PyAVReader
from streamd.sources.reader import Decoded, ErrorHook
from streamd.sources.state import DecodeMode

log = logging.getLogger(__name__)

# OpenCV's V4L2 reads wait at most this long, so that stop and the stall timeout are noticed.
_OPENCV_READ_TIMEOUT_MS = 500


def check_device(settings: CameraSettings) -> str:
    """The device path if it exists and is a character device, else SourceError(kind="device")."""
    device = settings.device or ""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        raise SourceError(
            f"camera {settings.name!r}: USB device {device} not found (is the camera plugged in? "
            "`v4l2-ctl --list-devices` lists the devices present)",
            "device",
        ) from None
    except PermissionError:
        raise SourceError(
            f"camera {settings.name!r}: USB device {device}: permission denied (add the streamd user to "
            "the 'video' group)",
            "device",
        ) from None
    if not stat.S_ISCHR(mode):
        raise SourceError(f"camera {settings.name!r}: {device} is not a video device (not a character device)", "device")
    return device


def v4l2_options(settings: CameraSettings) -> dict[str, str]:
    """FFmpeg v4l2 input options for the camera's ``usb:`` settings."""
    usb = settings.usb
    options: dict[str, str] = {}
    if usb.width and usb.height:
        options["video_size"] = f"{usb.width}x{usb.height}"
    if usb.fps:
        options["framerate"] = f"{usb.fps:g}"
    if usb.pixel_format:
        options["input_format"] = usb.pixel_format
    options.update(settings.options)
    return options


def open_usb(
    settings: CameraSettings, *, on_error: ErrorHook | None = None, stop: threading.Event | None = None
) -> PyAVReader | OpenCVReader:
    """An open reader for a USB camera, with the backend of ``settings.usb.backend``."""
    device = check_device(settings)
    if settings.usb.backend == "opencv":
        return OpenCVReader(settings, stop=stop).open()
    reader = PyAVReader(settings, on_error=on_error, stop=stop, target=device, fmt="v4l2", options=v4l2_options(settings))
    try:
        return reader.open()
    except SourceError as exc:
        if exc.kind == "interrupted":
            raise
        # A device that exists but cannot be opened is busy, unplugged meanwhile, or not a capture node.
        raise SourceError(f"{exc} (is it a V4L2 capture node, not in use by another program?)", "device") from None


class OpenCVReader:
    """A V4L2 camera read with ``cv2.VideoCapture(device, cv2.CAP_V4L2)``.

    Frames arrive as BGR already; timestamps are the host's monotonic clock at capture. Every
    frame is decoded by the driver path, so the mode is always ``full``.
    """

    def __init__(self, settings: CameraSettings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self._stop = stop or threading.Event()
        self._cap: Any = None
        self.mode: DecodeMode | None = None
        self.width = 0
        self.height = 0
        self.keyframe_interval: float | None = None
        self.wanted_from: float | None = None  # a hint this reader does not use

    def open(self) -> OpenCVReader:
        import cv2

        s, usb = self.settings, self.settings.usb
        cap = cv2.VideoCapture(s.device or "", cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {s.name!r}: OpenCV cannot open USB device {s.device}", "device")
        if usb.pixel_format:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*_fourcc(usb.pixel_format)))
        if usb.width and usb.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, usb.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, usb.height)
        if usb.fps:
            cap.set(cv2.CAP_PROP_FPS, usb.fps)
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, _OPENCV_READ_TIMEOUT_MS)
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._cap, self.mode = cap, "full"
        return self

    def frames(self) -> Iterator[Decoded]:
        import cv2

        s = self.settings
        last_frame = time.monotonic()
        while not self._stop.is_set():
            ok, image = self._cap.read()
            now = time.monotonic()
            if not ok:
                if now - last_frame > s.stall_timeout_s:
                    raise SourceError(f"camera {s.name!r}: no frame from {s.device} for {s.stall_timeout_s:g} s", "stall")
                continue
            last_frame = now
            size = s.detect_size(image.shape[1], image.shape[0])
            yield Decoded(now, 0, False, lambda img=image, size=size: _resize(cv2, img, size))

    def interrupt(self) -> None:
        """Reads time out every 0.5 s and check the stop event: nothing more to do."""

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _fourcc(pixel_format: str) -> str:
    names = {"mjpeg": "MJPG", "mjpg": "MJPG", "yuyv422": "YUYV", "yuyv": "YUYV", "h264": "H264", "nv12": "NV12"}
    return names.get(pixel_format.lower(), pixel_format.upper()[:4].ljust(4))


def _resize(cv2: Any, image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

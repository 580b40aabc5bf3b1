"""Per-camera settings: where the video comes from, how it is sampled, and how failures are retried.

One ``CameraSettings`` per entry of ``cameras:`` in the daemon config::

    cameras:
      - name: front_door
        url: rtsp://viewer:secret@192.168.1.20:554/stream1
        sample_fps: 5
        detect_width: 1280          # height follows the aspect ratio
        zones:
          - name: porch
            polygon: [[0, 300], [640, 300], [640, 720], [0, 720]]
        masks:
          - [[1000, 0], [1280, 0], [1280, 200], [1000, 200]]   # a TV in the corner
      - name: desk
        device: /dev/video0
        usb: {width: 1280, height: 720, fps: 30, pixel_format: mjpeg}

Passwords in ``url`` never reach logs: everything printed about a camera goes through
:func:`streamd.sources.redact.redact_url`, and the JSON dump of the settings masks them too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from streamd.sources.redact import redact_url

#: Camera and zone names end up in MQTT topics, metric labels and file names: keep them to
#: characters that are safe in all three (no '/', '+', '#', spaces).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

#: URL schemes handed to FFmpeg through PyAV. A plain path (or file://) is a video file.
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp")

Point = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe camera/zone name, else a ValueError saying what is allowed."""
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_' or '-', starting with a "
            "letter or digit (it is used in MQTT topics, metric labels and file names)"
        )
    return value


def _check_polygon(points: list[Point], what: str) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"{what} needs at least 3 [x, y] points, got {len(points)}")
    for x, y in points:
        if x < 0 or y < 0:
            raise ValueError(f"{what} has a negative coordinate [{x:g}, {y:g}]; points are pixels of the detection frame")
    return points


class ZoneSettings(_Strict):
    """A named polygon of the detection frame; tracks record which zones their faces were in."""

    name: str = Field(description="Zone name, reported on track events (letters, digits, '_', '-').")
    polygon: list[Point] = Field(
        description="At least 3 [x, y] points in pixels of the detection frame (after detect_width/height "
        "scaling), in drawing order."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "zone name")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[Point]) -> list[Point]:
        return _check_polygon(v, "zone polygon")


class BackoffSettings(_Strict):
    """Reconnect delays after a failure: ``initial_s * multiplier**(n-1)``, capped, with jitter.

    The camera never gives up: it keeps retrying at ``max_s`` intervals for as long as it is down
    and resumes by itself when it comes back.
    """

    initial_s: float = Field(
        1.0, gt=0, le=3600, description="Delay before the first retry. Shorter recovers faster from blips but "
        "hammers a camera that is rebooting."
    )
    max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest delay between retries. Higher is gentler on a dead camera "
        "and the network, but the camera is noticed back later."
    )
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="Growth of the delay per consecutive failure.")
    jitter: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Random spread of each delay, as a fraction (0.2 = +-20 %), so that many cameras behind "
        "one failed switch do not all reconnect in the same instant.",
    )

    @model_validator(mode="after")
    def _order(self) -> BackoffSettings:
        if self.max_s < self.initial_s:
            raise ValueError(f"backoff.max_s ({self.max_s:g}) must be >= backoff.initial_s ({self.initial_s:g})")
        return self


class UsbSettings(_Strict):
    """Capture format asked of a USB/V4L2 camera (``device:``); unset fields keep the driver's default."""

    backend: Literal["pyav", "opencv"] = Field(
        "pyav",
        description="pyav reads through FFmpeg's v4l2 input (timestamps from the driver); opencv uses "
        "cv2.VideoCapture(CAP_V4L2), for devices FFmpeg cannot open.",
    )
    width: int | None = Field(None, ge=16, le=8192, description="Capture width in pixels.")
    height: int | None = Field(None, ge=16, le=8192, description="Capture height in pixels.")
    fps: float | None = Field(
        None, gt=0, le=240, description="Capture frame rate. Lower costs less USB bandwidth and decode time."
    )
    pixel_format: str | None = Field(
        None,
        description="V4L2 pixel format, e.g. mjpeg (high resolutions at full rate, costs a JPEG decode) or "
        "yuyv422 (no decode, but USB 2 limits it to low resolutions or rates).",
    )

    @model_validator(mode="after")
    def _size_pair(self) -> UsbSettings:
        if (self.width is None) != (self.height is None):
            raise ValueError("usb.width and usb.height must be given together")
        return self


class CameraSettings(_Strict):
    """One camera: a network stream or video file (``url``) or a USB camera (``device``)."""

    name: str = Field(
        description="Unique camera name, used in MQTT topics, metrics and snapshot paths "
        "(letters, digits, '_', '-')."
    )
    url: str | None = Field(
        None,
        description="rtsp://, rtsps://, http(s):// (MJPEG, HLS .m3u8), rtmp:// or a video file path. "
        "Credentials in the URL are masked in every log line and error.",
    )
    device: str | None = Field(None, description="A V4L2 device such as /dev/video0 (instead of url).")
    enabled: bool = Field(True, description="A disabled camera is kept in the config but never opened.")
    sample_fps: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Frames per second passed on to recognition, chosen by timestamp. Higher identifies "
        "faster and tracks better, but costs detection time per camera; at or below the stream's "
        "keyframe rate only keyframes are decoded, which is many times cheaper.",
    )
    decode: Literal["auto", "full", "keyframes"] = Field(
        "auto",
        description="auto decodes keyframes only when sample_fps is at or below the measured keyframe rate; "
        "full always decodes every frame (even sampling, most CPU); keyframes always decodes keyframes only "
        "(cheapest, but the sample rate is capped at the keyframe rate).",
    )
    deblock: bool = Field(
        False,
        description="Run the codec's deblocking (loop) filter while decoding H.264 or HEVC. Off (FFmpeg's "
        "skip_loop_filter=all) decodes about a quarter faster and gives slightly blockier frames (about "
        "42 dB PSNR against the filtered frames on a real 720p camera clip), which detection and "
        "recognition do not notice; on gives cleaner snapshots at the full decoding cost.",
    )
    transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="RTSP transport. tcp survives packet loss and NAT at the cost of latency under loss; "
        "udp has the lowest latency but loses (smears) frames on a lossy link.",
    )
    loop: bool = Field(False, description="Video files only: start again at the end (replays, demos, tests).")
    realtime: bool | None = Field(
        None,
        description="Read a video file at its own frame rate like a live camera (default: on when loop is "
        "on). Off reads as fast as decoding allows (batch processing).",
    )
    detect_width: int | None = Field(
        None,
        ge=32,
        le=8192,
        description="Frames are scaled to this width during decoding (one swscale pass). Lower is faster "
        "downstream but loses small faces. Alone, the height follows the aspect ratio.",
    )
    detect_height: int | None = Field(
        None, ge=32, le=8192, description="Detection frame height; alone, the width follows the aspect ratio."
    )
    zones: list[ZoneSettings] = Field(
        default_factory=list, description="Named polygons (detection-frame pixels) recorded on tracks."
    )
    masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (detection-frame pixels) where faces are ignored: posters, TVs, mirrors.",
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest wait to open the stream and read its header. Shorter notices a dead camera "
        "sooner; too short fails on slow links or cameras that take long to send their first keyframe.",
    )
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="No decoded frame for this long means the camera is down and is reconnected. Must "
        "exceed the keyframe interval; shorter recovers sooner but may cut a congested stream.",
    )
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    usb: UsbSettings = Field(default_factory=UsbSettings)
    queue_size: int = Field(
        2,
        ge=1,
        le=1000,
        description="Sampled frames waiting for recognition per camera. Small keeps decisions near live; "
        "large rides out bursts but adds latency.",
    )
    drop_policy: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="When the queue is full: drop_oldest keeps the freshest frames (live view); "
        "drop_newest keeps what was queued (no gaps in the past, but falls behind live).",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra FFmpeg demuxer options passed to the input as-is, e.g. {rtsp_flags: prefer_tcp}.",
    )

    # ---------------------------------------------------------------- validation

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "camera name")

    @field_validator("masks")
    @classmethod
    def _masks(cls, v: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(p, f"mask {i}") for i, p in enumerate(v)]

    @model_validator(mode="after")
    def _source(self) -> CameraSettings:
        if (self.url is None) == (self.device is None):
            raise ValueError(f"camera {self.name!r}: give exactly one of url (stream or file) or device (USB)")
        if self.url is not None and not self.url.strip():
            raise ValueError(f"camera {self.name!r}: url is empty")
        if self.loop and self.kind != "file":
            raise ValueError(f"camera {self.name!r}: loop applies to video files only, not to {self.kind} sources")
        names = [z.name for z in self.zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera {self.name!r}: zone names must be unique, repeated: {', '.join(dupes)}")
        if self.detect_width and self.detect_height:
            for label, poly in [(f"zone {z.name!r}", z.polygon) for z in self.zones] + [
                (f"mask {i}", m) for i, m in enumerate(self.masks)
            ]:
                for x, y in poly:
                    if x > self.detect_width or y > self.detect_height:
                        raise ValueError(
                            f"camera {self.name!r}: {label} point [{x:g}, {y:g}] is outside the "
                            f"{self.detect_width}x{self.detect_height} detection frame"
                        )
        return self

    @field_serializer("url", when_used="json")
    def _dump_url(self, url: str | None) -> str | None:
        # JSON dumps (`streamd config show`, /api) never print a camera password.
        return redact_url(url) if url else url

    # ---------------------------------------------------------------- derived

    @property
    def kind(self) -> Literal["network", "file", "usb"]:
        """``usb`` for a device, ``network`` for a URL with a network scheme, else ``file``."""
        if self.device is not None:
            return "usb"
        scheme = self.url.split("://", 1)[0].lower() if self.url and "://" in self.url else ""
        return "network" if scheme in NETWORK_SCHEMES else "file"

    @property
    def display_source(self) -> str:
        """The URL with its password masked, or the device path: safe to log."""
        return self.device if self.device is not None else redact_url(self.url)

    @property
    def file_path(self) -> Path | None:
        """The local path of a file source, else None."""
        if self.kind != "file" or self.url is None:
            return None
        return Path(self.url.removeprefix("file://"))

    @property
    def is_realtime(self) -> bool:
        """True when frames should be paced at the video's own rate (live sources always are)."""
        if self.kind != "file":
            return True
        return self.loop if self.realtime is None else self.realtime

    def detect_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The (width, height) frames are scaled to from a ``width`` x ``height`` source, or None to keep it.

        A single given side keeps the aspect ratio, rounded to an even number (what swscale and
        most encoders prefer).
        """
        w, h = self.detect_width, self.detect_height
        if w is None and h is None:
            return None
        if w is None:
            w = max(2, int(round(width * h / height / 2)) * 2)  # type: ignore[operator]
        if h is None:
            h = max(2, int(round(height * w / width / 2)) * 2)
        if (w, h) == (width, height):
            return None
        return w, h

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # repr() (tracebacks, debuggers) shows the masked URL.
        for key, value in super().__repr_args__():
            yield key, (redact_url(value) if key == "url" and value else value)


def check_unique_names(cameras: list[CameraSettings]) -> list[CameraSettings]:
    """``cameras`` if their names are unique, else a ValueError naming the repeated ones."""
    names = [c.name for c in cameras]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"camera names must be unique, repeated: {', '.join(dupes)}")
    return cameras

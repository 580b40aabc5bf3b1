"""RTSP, HTTP/HLS, video files (and V4L2 devices, see usb.py) read and decoded through PyAV.

One :class:`PyAVReader` is one connection. It opens the input with PyAV's ``timeout=(open,
read)`` (the camera's connect and stall timeouts), decodes the first video stream, chooses full
or keyframe-only decoding from the measured keyframe interval (:mod:`decode_mode`), loops files
when asked, and converts to BGR, scaled to the detection size in the same swscale call, only
the frames the sampler keeps.

A read blocked on a dead socket is aborted by :meth:`PyAVReader.interrupt` (from any thread)
through FFmpeg's interrupt callback (see :mod:`streamd.sources.interrupt`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import av
import av.error
import cv2
import numpy as np

from streamd.errors import SourceError
from streamd.sources import interrupt
from streamd.sources.config import CameraSettings
from streamd.sources.decode_mode import KeyframeMeter, choose_mode
from streamd.sources.reader import Decoded, ErrorHook
from streamd.sources.redact import redact_text
from streamd.sources.state import DecodeMode

log = logging.getLogger(__name__)

# A stream whose packets fail to decode this many times in a row is reconnected: the decoder
# state is beyond concealment (e.g. the camera changed resolution without a new SPS).
MAX_CONSECUTIVE_DECODE_ERRORS = 50
# In keyframe mode, this many keyframe packets without a decoded frame means the stream's
# "keyframes" are not decodable on their own (intra refresh, open GOP): go back to full decoding.
KEYFRAME_MODE_GIVE_UP = 3
# Decoder threads per camera. Cameras are the parallelism: one thread each decodes a 720p25
# stream with room to spare, and more threads per stream only add contention and frame delay.
DECODE_THREADS = 1
#: AVColorRange of full-range ("JPEG") YUV, which OpenCV's I420 conversion does not handle.
_FULL_RANGE = 2


def frame_to_bgr(frame: Any) -> np.ndarray:
    """A decoded frame as BGR uint8 (H, W, 3).

    Limited-range yuv420p, what cameras send, goes through OpenCV's ``cvtColor``: 0.42 ms for a
    720p frame, against 1.5 ms for PyAV's ``to_ndarray(format="bgr24")``, which builds a new
    swscale context for every frame object. Both use BT.601 coefficients; their results differ by
    rounding (mean 1.1-1.2 levels) and, at sharp colour edges, by how chroma is upsampled (up to
    6). Any other format (and odd sizes, which the planar layout cannot hold) goes through swscale.
    """
    if (frame.format.name == "yuv420p" and frame.color_range != _FULL_RANGE
            and frame.width % 2 == 0 and frame.height % 2 == 0):
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def input_for(settings: CameraSettings) -> tuple[str, dict[str, str]]:
    """The FFmpeg input target and demuxer options for a URL or file camera."""
    options: dict[str, str] = {}
    target = settings.url or ""
    if settings.kind == "file":
        target = str(settings.file_path)
    elif target.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = settings.transport
    options.update(settings.options)
    return target, options


def describe_av_error(exc: BaseException, secret_url: str | None = None) -> str:
    """A one-line reason from a PyAV/FFmpeg exception, without the URL FFmpeg appends to it."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact_text(reason, secret_url)


class PyAVReader:
    """One open connection to a URL, file or device, decoded with PyAV.

    ``fmt`` and ``options`` override the input format and FFmpeg options (USB devices use
    ``fmt="v4l2"``). ``stop`` is the camera's stop event: realtime pacing of files waits on it.
    """

    def __init__(
        self,
        settings: CameraSettings,
        *,
        on_error: ErrorHook | None = None,
        stop: threading.Event | None = None,
        target: str | None = None,
        fmt: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        default_target, default_options = input_for(settings) if settings.url else ("", {})
        self._target = target if target is not None else default_target
        self._options = options if options is not None else default_options
        self._format = fmt
        self._on_error = on_error or (lambda kind, message: None)
        self._stop = stop or threading.Event()
        self._container: Any = None
        self._stream: Any = None
        self._thread_id: int | None = None
        self._interrupted = False
        self.mode: DecodeMode | None = None
        self.width = 0
        self.height = 0
        self.keyframe_interval: float | None = None
        self._meter = KeyframeMeter()
        self._keyframes_failed = False
        self._decode_s = 0.0
        #: Set by the consumer after each frame: the earliest pts (seconds, on the clock of the
        #: frames yielded) it will sample next; None: it may want any frame. See _in_dead_tail.
        self.wanted_from: float | None = None
        self._tails = settings.decode == "auto"  # off for good once a GOP was not as predicted

    # ------------------------------------------------------------------ open / close

    def open(self) -> PyAVReader:
        """Connect and read the stream header within ``connect_timeout_s``; raises SourceError."""
        s = self.settings
        self._thread_id = threading.get_ident()
        interrupt.install()
        started = time.monotonic()
        try:
            self._container = av.open(
                self._target,
                mode="r",
                format=self._format,
                options=self._options,
                timeout=(s.connect_timeout_s, s.stall_timeout_s),
            )
        except FileNotFoundError:
            raise SourceError(f"camera {s.name!r}: {s.display_source}: no such file or device", "open") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise self._failure("cannot open", exc, started, s.connect_timeout_s) from None
        videos = self._container.streams.video
        if not videos:
            self.close()
            raise SourceError(f"camera {s.name!r}: {s.display_source} has no video stream", "no_video")
        self._stream = videos[0]
        ctx = self._stream.codec_context
        ctx.thread_count = DECODE_THREADS
        if not s.deblock:
            # The deblocking filter smooths block edges for the eye and is about a quarter of H.264
            # decoding; the face models do not need it (measured: CameraSettings.deblock).
            ctx.options = {"skip_loop_filter": "all"}
        self.width, self.height = ctx.width, ctx.height
        self._set_mode("keyframes" if s.decode == "keyframes" else "full")
        return self

    def interrupt(self) -> None:
        """Abort a blocked open or read in the reading thread (callable from any thread)."""
        self._interrupted = True
        if self._thread_id is not None:
            interrupt.interrupt(self._thread_id)

    def close(self) -> None:
        """Close the container; the reading thread may read again afterwards."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception as exc:  # closing a broken stream must not mask why it broke
                log.debug("camera %r: close: %s", self.settings.name, describe_av_error(exc, self.settings.url))
        if self._thread_id is not None:
            interrupt.clear(self._thread_id)

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def frames(self) -> Iterator[Decoded]:
        """Decoded frames until a file (without loop) ends; raises SourceError when the stream fails."""
        if self._container is None:
            self.open()
        s = self.settings
        stream, ctx = self._stream, self._stream.codec_context
        # Packet times as floats, converted once: Fraction arithmetic on every packet is slow.
        time_base = float(stream.time_base)
        loop_offset = 0.0
        last_pts: float | None = None
        frame_step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
        pace_origin: tuple[float, float] | None = None  # (pts, monotonic) for realtime files
        packets_since_frame = 0
        keyframes_since_frame = 0
        tail_skipped = 0  # packets left undecoded since the last frame (see _in_dead_tail)
        last_packet_pts: float | None = None
        refs_missing = False  # frames lack references until the next keyframe (a GOP longer than predicted)
        bad_packets = 0
        clean_seen = False
        while True:
            first_pts: float | None = None
            for packet in self._demux():
                if packet.size == 0 and packet.pts is None:
                    decoded = self._decode(ctx, None)  # flush at the end of a file
                else:
                    packets_since_frame += 1
                    pts_in = packet.pts * time_base + loop_offset if packet.pts is not None else None
                    if packet.is_keyframe:
                        keyframes_since_frame += 1
                        if pts_in is not None:
                            self._meter.add(pts_in)
                            self._update_mode()
                    if self.mode == "keyframes" and keyframes_since_frame > KEYFRAME_MODE_GIVE_UP:
                        self._give_up_keyframes()
                    if self._tails and pts_in is not None:
                        if not packet.is_keyframe and self._in_dead_tail(pts_in, last_packet_pts, frame_step,
                                                                         tail_skipped):
                            tail_skipped += 1
                            last_packet_pts = pts_in
                            continue
                        last_packet_pts = pts_in
                        refs_missing = refs_missing or (not self._tails and tail_skipped > 0)
                    if packet.is_keyframe:
                        refs_missing = False
                    decoded = self._decode(ctx, packet)
                    if decoded is None:
                        bad_packets += 1
                        if bad_packets >= MAX_CONSECUTIVE_DECODE_ERRORS:
                            raise SourceError(
                                f"camera {s.name!r}: {bad_packets} packets in a row could not be decoded", "decode"
                            )
                        continue
                    bad_packets = 0
                for frame in decoded or ():
                    pts = frame.time
                    if pts is None or not math.isfinite(pts):  # PyAV gives NaN for some B-frames flushed at the end
                        pts = (last_pts - loop_offset + frame_step) if last_pts is not None else 0.0
                    if first_pts is None:
                        first_pts = pts
                    pts += loop_offset
                    unseen = max(0, packets_since_frame - 1) if self.mode == "keyframes" else tail_skipped
                    packets_since_frame = keyframes_since_frame = tail_skipped = 0
                    last_pts = pts
                    # Frames decoded without their references are damaged whatever the decoder says.
                    corrupt = bool(frame.is_corrupt) or refs_missing
                    if not clean_seen:
                        if corrupt:
                            continue  # joined mid-GOP: frames before the first keyframe lack references
                        clean_seen = True
                    if s.is_realtime and s.kind == "file":
                        pace_origin = self._pace(pts, pace_origin)
                        if self._stop.is_set():
                            return
                    yield Decoded(pts, unseen, corrupt, partial(self._to_bgr, frame), self._decode_s)
                if self._stop.is_set():
                    return
            # The demuxer reached the end of the input.
            if s.kind != "file":
                raise SourceError(f"camera {s.name!r}: the stream ended (the server closed it)", "eof")
            if not s.loop or last_pts is None:
                return
            # From the last packet, decoded or not (a dead tail may end the file).
            end = max(last_pts, last_packet_pts) if last_packet_pts is not None else last_pts
            loop_offset = end + frame_step - (first_pts or 0.0)
            stream, ctx = self._rewind()
            time_base = float(stream.time_base)

    def _in_dead_tail(self, pts: float, previous: float | None, frame_step: float, skipped: int) -> bool:
        """Whether the non-key packet at ``pts`` may go undecoded: it lies in the *dead tail* of its GOP.

        While every frame is decoded (the sample rate is above the keyframe rate), the frames after
        the last sample before a keyframe serve nothing: no sample is taken among them, and the
        keyframe starts the next samples' references afresh. With 5 samples/s of 25 fps and a
        keyframe every second, that is 4 frames of 25 (the sampler's schedule starts on the first
        keyframe, so samples fall on frames 0, 5, 10, 15 and 20). Measured on the benchmark's
        clips: 14 % less decoding CPU, the same frames sampled, none damaged.

        Only in ``decode: auto``, once the keyframe interval was the same three times in a row
        (a fixed GOP), and while packets come in presentation order (no B-frames). If a keyframe
        is late after packets were left out, the frames up to it lack their references: they are
        marked corrupt (the supervisor skips them), and the reader decodes every frame of this
        connection from then on and reports it once.
        """
        if self.mode != "full":
            return False
        if previous is not None and pts < previous:  # reordered (B-frames): decode order is not time order
            self._tails = False
            return False
        margin = 0.5 * frame_step
        expected = self._meter.next_expected(margin)
        want = self.wanted_from
        if expected is None or want is None:
            return False
        if pts >= expected - margin:
            if skipped:  # the keyframe did not come where the GOP said; what follows lacks references
                self._tails = False
                self._on_error(
                    "keyframes",
                    f"camera {self.settings.name!r}: a keyframe came later than its regular interval; "
                    "decoding every frame",
                )
            return False
        # Left out only when the sampler's next pick comes after the last frame before the keyframe
        # (expected - one frame step), with a quarter step to spare for float drift and jitter:
        # the keyframe is then the next sample, and nothing before it is needed.
        return want > expected - 0.75 * frame_step

    def _rewind(self) -> tuple[Any, Any]:
        """Back to the start of a looping file: seek, or reopen the formats that cannot seek (raw .h264)."""
        try:
            self._container.seek(0, stream=self._stream)
            self._stream.codec_context.flush_buffers()
        except (av.error.FFmpegError, OSError):
            mode = self.mode
            self.close()
            self.mode = None
            self.open()
            self._set_mode(mode or "full")
        return self._stream, self._stream.codec_context

    def _demux(self) -> Iterator[Any]:
        started = time.monotonic()
        try:
            for packet in self._container.demux(self._stream):
                yield packet
                started = time.monotonic()
        except (av.error.FFmpegError, OSError) as exc:
            if self._interrupted or self._stop.is_set():
                raise SourceError(f"camera {self.settings.name!r}: read interrupted by stop", "interrupted") from None
            raise self._failure("read failed", exc, started, self.settings.stall_timeout_s, kind="stall") from None

    def _decode(self, ctx: Any, packet: Any) -> list[Any] | None:
        """The frames of ``packet``; None (after reporting it) when the packet is undecodable."""
        started = time.perf_counter()
        try:
            frames = ctx.decode(packet)
            self._decode_s = (time.perf_counter() - started) / max(1, len(frames))
            return frames
        except av.error.FFmpegError as exc:
            self._on_error("decode", f"camera {self.settings.name!r}: damaged packet skipped: "
                           f"{describe_av_error(exc, self.settings.url)}")
            return None

    def _to_bgr(self, frame: Any) -> np.ndarray:
        size = self.settings.detect_size(frame.width, frame.height)
        if size is None:
            return frame_to_bgr(frame)
        return frame.to_ndarray(format="bgr24", width=size[0], height=size[1])

    def _pace(self, pts: float, origin: tuple[float, float] | None) -> tuple[float, float]:
        """Wait until ``pts`` is due in wall time (files read like a live camera)."""
        now = time.monotonic()
        if origin is None:
            return pts, now
        due = origin[1] + (pts - origin[0])
        if due - now < -1.0 or pts < origin[0]:
            return pts, now  # far behind, or the pts restarted: re-anchor rather than burst
        if due > now:
            self._stop.wait(due - now)
        return origin

    # ------------------------------------------------------------------ decode mode

    def _set_mode(self, mode: DecodeMode) -> None:
        if mode == self.mode:
            return
        self._stream.codec_context.skip_frame = "NONKEY" if mode == "keyframes" else "DEFAULT"
        if self.mode is not None:
            log.info("camera %r: decoding %s", self.settings.name,
                     "keyframes only" if mode == "keyframes" else "every frame")
        self.mode = mode

    def _update_mode(self) -> None:
        self.keyframe_interval = self._meter.interval
        if self._keyframes_failed:
            return
        self._set_mode(choose_mode(self.settings.decode, self.settings.sample_fps, self.keyframe_interval))

    def _give_up_keyframes(self) -> None:
        self._keyframes_failed = True
        self._on_error(
            "keyframes",
            f"camera {self.settings.name!r}: keyframes alone decode to nothing (intra refresh?); decoding every frame",
        )
        self._set_mode("full")

    # ------------------------------------------------------------------ errors

    def _failure(
        self, what: str, exc: BaseException, started: float, timeout: float, kind: str = "open"
    ) -> SourceError:
        s = self.settings
        if self._interrupted or self._stop.is_set():
            return SourceError(f"camera {s.name!r}: {what}: interrupted by stop", "interrupted")
        waited = time.monotonic() - started
        if waited >= timeout * 0.95:
            reason = f"no answer within {timeout:g} s"
            kind = "stall" if kind == "stall" else "timeout"
        else:
            reason = describe_av_error(exc, s.url)
            kind = "open" if kind == "open" else "read"
        return SourceError(f"camera {s.name!r}: {what} {s.display_source}: {reason}", kind)

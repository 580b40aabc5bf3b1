"""Making H.264 test clips with PyAV: a fixed size, frame rate and keyframe interval.

Tests and benchmarks need video whose properties they control (a keyframe every N frames, so
that keyframe-only decoding can be measured) made from real footage. :func:`encode_h264`
resamples any video PyAV reads to that format by timestamps (the clip keeps its duration).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av


def encode_h264(
    src: Path | str,
    dst: Path | str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 25,
    gop: int = 25,
    seconds: float | None = None,
    crf: int = 23,
    preset: str = "ultrafast",
    keyframes: Sequence[int] | None = None,
    bframes: int = 0,
) -> int:
    """Re-encode the video of ``src`` into ``dst`` (H.264, yuv420p); answers the frame count.

    Keyframes come every ``gop`` frames exactly (no scene-cut keyframes), or at the frame numbers
    ``keyframes`` gives (an irregular GOP). ``bframes`` B-frames at most between references
    (none by default, as most cameras send). ``seconds`` limits
    the output duration; the input is resampled to ``fps`` by timestamp. The container follows
    ``dst``'s suffix (.mp4, .mkv, .h264 for a raw Annex B stream). ``preset`` ultrafast encodes
    fastest (tests); veryfast makes CABAC High-profile streams like IP cameras send (benchmarks).
    """
    dst = Path(dst)
    period = 1.0 / fps
    count = 0
    forced = frozenset(keyframes) if keyframes is not None else None
    keyint = gop if forced is None else 100_000  # only the forced ones
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream(
            "libx264",
            rate=fps,
            options={
                "preset": preset,
                "crf": str(crf),
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes}",
                "forced-idr": "1",  # a frame forced to be a keyframe is an IDR, like a camera's keyframes
            },
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        pending = None  # the latest input frame, held until the output clock passes it
        for frame in inp.decode(video=0):
            t = frame.time or 0.0
            while pending is not None and count * period <= t:
                if seconds is not None and count * period >= seconds:
                    break
                _write(stream, out, pending, count, fps, width, height, forced)
                count += 1
            if seconds is not None and count * period >= seconds:
                break
            pending = frame
        if pending is not None and (seconds is None or count * period < seconds):
            _write(stream, out, pending, count, fps, width, height, forced)
            count += 1
        for packet in stream.encode():
            out.mux(packet)
    return count


def _write(stream, out, frame, index: int, fps: int, width: int, height: int,  # type: ignore[no-untyped-def]
           forced: frozenset[int] | None) -> None:
    image = frame.reformat(width=width, height=height, format="yuv420p")
    # A fresh frame: the source's picture types would otherwise force keyframes where it had them.
    fresh = av.VideoFrame.from_ndarray(image.to_ndarray(), format="yuv420p")
    fresh.pts, fresh.time_base = index, Fraction(1, fps)
    if forced is not None and index in forced:
        fresh.pict_type = av.video.frame.PictureType.I
    for packet in stream.encode(fresh):
        out.mux(packet)

"""`streamd bench decode`: what a camera costs to decode, full vs keyframe-only.

A 1280x720 25 fps H.264 clip is made from a real video (by default the Hamilton clip of
../shared) for each keyframe interval asked, then read by the camera reader exactly as a
camera would be, sampled at ``--sample-fps`` with the sampled frames converted to BGR:

- decoded frames per second of wall time, and frames decoded per second of video;
- CPU milliseconds per second of video (process CPU time; one decoder thread per camera, so
  1000 ms means one full core per camera). Wall-clock figures depend on what else the machine
  runs; the CPU figures do not;
- samples per second delivered (keyframe-only decoding cannot deliver more than the keyframe rate).

Keyframe-only decoding is chosen by ``decode: auto`` only where the sample rate is at or below
the keyframe rate, e.g. a keyframe every 5th frame (GOP 5) at 5 samples/s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

DEFAULT_VIDEO = Path("../shared/data/faces/video/faces/ageitgey_short_hamilton_clip.mp4")


def measure(
    clip: Path, clip_s: float, mode: str, sample_fps: float, repeat: int, detect_width: int | None
) -> dict[str, float]:
    """Read ``clip`` (``clip_s`` seconds long) ``repeat`` times in decode ``mode``; the figures of one row."""
    from streamd.sources.config import CameraSettings
    from streamd.sources.pyav_source import PyAVReader
    from streamd.sources.sampler import Sampler

    settings = CameraSettings(name="bench", url=str(clip), decode=mode, sample_fps=sample_fps,  # type: ignore[arg-type]
                              detect_width=detect_width)
    decoded = sampled = 0
    video_s = clip_s * repeat
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        sampler = Sampler(sample_fps)
        with PyAVReader(settings).open() as reader:
            for frame in reader.frames():
                decoded += 1
                if sampler.offer(frame.pts, frame.unseen):
                    frame.to_bgr()
                    sampled += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "video_s": video_s,
        "decoded": decoded,
        "decoded_per_s": decoded / wall,
        "decoded_per_video_s": decoded / video_s,
        "cpu_ms_per_video_s": cpu * 1000.0 / video_s,
        "samples_per_video_s": sampled / video_s,
        "realtime_x": video_s / wall,
    }


@click.command("decode")
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"Source video re-encoded for the test [default: {DEFAULT_VIDEO} when present].")
@click.option("--gops", default="5,25", show_default=True, help="Keyframe intervals (frames) to make clips with.")
@click.option("--sample-fps", default=5.0, show_default=True, help="Samples per second (as a camera's sample_fps).")
@click.option("--seconds", default=9.0, show_default=True, help="Clip length (capped by the source video).")
@click.option("--repeat", default=3, show_default=True, help="Times each clip is read per mode.")
@click.option("--detect-width", type=int, default=None, help="Scale sampled frames to this width (detect_width).")
@click.option("--preset", default="veryfast", show_default=True,
              help="x264 preset of the clips; veryfast gives CABAC High-profile streams like IP cameras.")
def command(video: Path | None, gops: str, sample_fps: float, seconds: float, repeat: int,
            detect_width: int | None, preset: str) -> None:
    """Decode cost of a 1280x720 25 fps H.264 camera: full vs keyframe-only decoding."""
    from streamd.sources.clips import encode_h264

    source = video or DEFAULT_VIDEO
    if not source.exists():
        raise click.UsageError(f"no video to re-encode: {source} not found (give --video)")
    gop_list = [int(g) for g in gops.split(",") if g.strip()]
    click.echo(f"source {source}; 1280x720 25 fps H.264 ({preset}), {sample_fps:g} samples/s, "
               f"each clip read {repeat}x per mode, 1 decoder thread")
    header = (f"{'gop':>4} {'mode':>9} {'video s':>8} {'decoded':>8} {'dec fr/s':>9} {'dec/video s':>11} "
              f"{'CPU ms/video s':>14} {'samples/s':>9} {'x realtime':>10}")
    with tempfile.TemporaryDirectory(prefix="streamd-bench-decode-") as tmp:
        rows: dict[tuple[int, str], dict[str, float]] = {}
        for gop in gop_list:
            clip = Path(tmp) / f"clip-gop{gop}.mp4"
            frames = encode_h264(source, clip, gop=gop, seconds=seconds, preset=preset, crf=23)
            for mode in ("full", "keyframes"):
                rows[(gop, mode)] = measure(clip, frames / 25, mode, sample_fps, repeat, detect_width)
        click.echo(header)
        for (gop, mode), r in rows.items():
            click.echo(
                f"{gop:>4} {mode:>9} {r['video_s']:>8.1f} {r['decoded']:>8.0f} {r['decoded_per_s']:>9.0f} "
                f"{r['decoded_per_video_s']:>11.1f} {r['cpu_ms_per_video_s']:>14.1f} {r['samples_per_video_s']:>9.2f} "
                f"{r['realtime_x']:>10.1f}"
            )
        for gop in gop_list:
            full, key = rows[(gop, "full")], rows[(gop, "keyframes")]
            auto = "keyframes" if sample_fps <= 1.02 * 25 / gop else "full"
            click.echo(
                f"gop {gop}: keyframe-only decoding costs {key['cpu_ms_per_video_s'] / full['cpu_ms_per_video_s']:.2f}x "
                f"the CPU of full decoding ({full['cpu_ms_per_video_s'] / key['cpu_ms_per_video_s']:.1f}x cheaper) and "
                f"delivers {key['samples_per_video_s']:.2f} of {sample_fps:g} samples/s; decode: auto picks {auto}"
            )

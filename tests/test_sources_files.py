"""Video files through PyAV with real H.264 made from real faces: sampling, keyframe mode, loops, damage."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from rtsp import camera_threads, clip_720p, make_clip, wait_for  # noqa: F401 (clip_720p is a fixture)

from streamd.metrics import Metrics
from streamd.sources.config import CameraSettings
from streamd.sources.queues import END
from streamd.sources.supervisor import CameraSource
from streamd.types import Frame

pytestmark = pytest.mark.shared


@pytest.fixture(autouse=True)
def _no_leaked_camera_threads() -> Iterator[None]:
    yield
    assert wait_for(lambda: not camera_threads(), 5), f"leaked threads: {camera_threads()}"


@pytest.fixture(scope="module")
def clip_h264(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Path:
    """3 s of raw Annex B H.264 (no container), 1280x720 25 fps."""
    return make_clip(tmp_path_factory, faces_dir, "hamilton-720p.h264", seconds=3.0)


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _read_all(settings: CameraSettings, metrics: Metrics | None = None) -> tuple[list[Frame], CameraSource]:
    source = CameraSource(settings, metrics).start()
    frames = []
    while (item := source.queue.get(timeout=20)) is not END:  # type: ignore[union-attr]
        assert item is not None, "no frame within 20 s"
        frames.append(item)
    assert source.join(5)
    return frames, source


def _collect(settings: CameraSettings, count: int, metrics: Metrics) -> tuple[list[Frame], CameraSource]:
    frames: list[Frame] = []
    source = CameraSource(settings, metrics, on_frame=frames.append).start()
    assert wait_for(lambda: len(frames) >= count, 30), f"only {len(frames)} frames"
    source.stop()
    return frames, source


def test_a_file_is_sampled_at_the_configured_fps_by_timestamps(clip_720p: Path) -> None:
    # given a 6 s 25 fps clip sampled at 5 fps, scaled for detection
    metrics = Metrics()
    settings = CameraSettings(name="file", url=str(clip_720p), sample_fps=5, detect_width=640)

    # when
    frames, source = _read_all(settings, metrics)

    # then
    assert len(frames) == 30
    assert [round(b.pts - a.pts, 3) for a, b in pairwise(frames)] == [0.2] * 29
    assert all(f.skipped == 4 for f in frames[1:])
    assert frames[0].image.shape == (360, 640, 3)
    assert source.state.status == "ended" and source.state.mode == "full"
    assert (source.state.width, source.state.height) == (1280, 720)
    # every frame but the GOPs' dead tails, once the GOP is known (3 intervals): 4 frames of 25 in 3 GOPs
    assert _metric(metrics, "streamd_frames_decoded_total", camera="file") == 150 - 3 * 4
    assert _metric(metrics, "streamd_frames_sampled_total", camera="file") == 30
    assert _metric(metrics, "streamd_frames_dropped_total", camera="file", reason="queue_full") == 0
    assert _metric(metrics, "streamd_stage_duration_seconds_count", camera="file", stage="decode") == 138
    assert _metric(metrics, "streamd_stage_duration_seconds_count", camera="file", stage="convert") == 30
    assert _metric(metrics, "streamd_stage_duration_seconds_sum", camera="file", stage="decode") > 0


def test_keyframe_mode_is_chosen_at_or_below_the_keyframe_rate_and_decodes_far_fewer_frames(clip_720p: Path) -> None:
    # given a keyframe every second and 1 sample per second
    metrics = Metrics()
    settings = CameraSettings(name="kf", url=str(clip_720p), sample_fps=1)

    # when
    frames, source = _read_all(settings, metrics)

    # then
    decoded = _metric(metrics, "streamd_frames_decoded_total", camera="kf")
    assert source.state.mode == "keyframes"
    assert source.state.keyframe_interval_s == pytest.approx(1.0)
    assert decoded <= 60  # 150 frames in the clip: the first 2 s are measured at full decode, then 1/25
    assert [round(f.pts) for f in frames] == [0, 1, 2, 3, 4, 5]
    assert [f.skipped for f in frames[4:]] == [24, 24]  # frames of the source between two keyframes


def test_full_decoding_is_kept_when_sampling_above_the_keyframe_rate(clip_720p: Path) -> None:
    # given a keyframe every second and 2 samples per second
    metrics = Metrics()

    # when
    _, source = _read_all(CameraSettings(name="full", url=str(clip_720p), sample_fps=2), metrics)

    # then
    assert source.state.mode == "full"
    # every frame: the sampler's early tolerance (a tenth of its period) takes the frame just before
    # each keyframe, so no GOP has a dead tail here
    assert _metric(metrics, "streamd_frames_decoded_total", camera="full") == 150


def _same_samples(a: list[Frame], b: list[Frame], *, gaps: bool = True) -> None:
    assert [f.pts for f in a] == [f.pts for f in b]
    if gaps:
        assert [f.skipped for f in a] == [f.skipped for f in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image), f"sample at {x.pts} s differs"


def test_the_frames_after_a_gops_last_sample_are_not_decoded_and_the_samples_stay_the_same(clip_720p: Path) -> None:
    # given a keyframe every second, 5 samples a second, and the same camera told to decode every frame
    auto, full = Metrics(), Metrics()

    # when
    frames, _ = _read_all(CameraSettings(name="auto", url=str(clip_720p), sample_fps=5), auto)
    every, _ = _read_all(CameraSettings(name="all", url=str(clip_720p), sample_fps=5, decode="full"), full)

    # then the samples are the same frames, pixel for pixel, with the same gaps for the tracker
    assert len(frames) == 30
    _same_samples(frames, every)
    # and frames 21-24 of each GOP were left undecoded once the GOP was known
    assert _metric(auto, "streamd_frames_decoded_total", camera="auto") == 150 - 3 * 4
    assert _metric(full, "streamd_frames_decoded_total", camera="all") == 150
    assert _metric(auto, "streamd_stream_errors_total", camera="auto", kind="keyframes") == 0


def test_a_keyframe_later_than_the_gop_said_costs_no_damaged_sample_and_ends_the_skipping(
    tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given keyframes every second for 4 s, then one 1.6 s later (a camera that changed its GOP)
    clip = make_clip(tmp_path_factory, faces_dir, "hamilton-720p-late-keyframe.mp4", seconds=8.0,
                     keyframes=(0, 25, 50, 75, 100, 140, 165))
    metrics, full = Metrics(), Metrics()

    # when it is read with 5 samples a second, and again decoding every frame
    with caplog.at_level(logging.WARNING):
        frames, _ = _read_all(CameraSettings(name="late", url=str(clip), sample_fps=5), metrics)
    every, _ = _read_all(CameraSettings(name="all", url=str(clip), sample_fps=5, decode="full"), full)

    # then the frames between the predicted and the real keyframe lacked references: they were
    # skipped as damaged, never sampled
    assert _metric(metrics, "streamd_stream_errors_total", camera="late", kind="keyframes") == 1
    assert "a keyframe came later than its regular interval" in caplog.text
    lost = _metric(metrics, "streamd_stream_errors_total", camera="late", kind="corrupt")
    assert lost == 15  # 5.0 s to 5.56 s
    by_pts = {f.pts: f for f in every}
    assert len(frames) == len(every) - 3  # the samples due at 5.0, 5.2 and 5.4 s
    _same_samples(frames, [by_pts[f.pts] for f in frames], gaps=False)
    assert {round(f.pts, 2) for f in every} - {round(f.pts, 2) for f in frames} == {5.0, 5.2, 5.4}
    # and the tracker is told how far apart the samples around the hole are (4.8 s and 5.6 s)
    assert [(round(f.pts, 2), f.skipped) for f in frames[24:26]] == [(4.8, 4), (5.6, 19)]
    # and from then on every frame was decoded: 150 - 4 (GOP at 3 s) - 4 (at 4 s, whose tail was
    # skipped before the keyframe came late)
    assert _metric(metrics, "streamd_frames_decoded_total", camera="late") == 200 - 4 - 4


def test_streams_with_b_frames_decode_every_frame(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> None:
    # given a clip with B-frames: packets come in decoding order, not in time order
    clip = make_clip(tmp_path_factory, faces_dir, "hamilton-720p-bframes.mp4", seconds=6.0, bframes=2)
    metrics, full = Metrics(), Metrics()

    # when
    frames, _ = _read_all(CameraSettings(name="b", url=str(clip), sample_fps=5), metrics)
    every, _ = _read_all(CameraSettings(name="all", url=str(clip), sample_fps=5, decode="full"), full)

    # then nothing is left out: a frame's successors in time may come before it
    assert _metric(metrics, "streamd_frames_decoded_total", camera="b") == 150
    _same_samples(frames, every)


def _psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_deblocking_is_skipped_by_default_and_changes_the_frames_only_slightly(
    tmp_path_factory: pytest.TempPathFactory, faces_dir: Path
) -> None:
    import av

    from streamd.sources.pyav_source import frame_to_bgr

    # given a clip encoded the way cameras encode, with the deblocking filter (x264's ultrafast,
    # which the other clips use for speed, turns it off)
    clip = make_clip(tmp_path_factory, faces_dir, "hamilton-720p-deblocked.mp4", seconds=4.0, preset="veryfast")

    # when the same clip is read with the default (no deblocking) and with the codec's filter on
    fast, _ = _read_all(CameraSettings(name="fast", url=str(clip), sample_fps=5))
    clean, _ = _read_all(CameraSettings(name="clean", url=str(clip), sample_fps=5, deblock=True))

    # then the same frames are sampled, and the filtered ones are what the codec makes by default
    assert [f.pts for f in fast] == [f.pts for f in clean]
    with av.open(str(clip)) as container:
        first = frame_to_bgr(next(container.decode(video=0)))
    assert np.array_equal(first, clean[0].image)
    # and skipping the filter changes every sample, but only at block edges: no visible damage
    psnr = [_psnr_db(a.image, b.image) for a, b in zip(fast, clean)]
    assert all(p < float("inf") for p in psnr), "deblocking was not skipped"
    assert min(psnr) > 35.0, f"frames without deblocking differ too much: {min(psnr):.1f} dB"


def test_a_looping_file_keeps_timestamps_increasing_across_loops(clip_720p: Path) -> None:
    # given a looping file read as fast as it decodes
    settings = CameraSettings(name="loop", url=str(clip_720p), sample_fps=5, loop=True, realtime=False)

    # when 2.5 loops are read
    frames, source = _collect(settings, 75, Metrics())

    # then the clock runs on across the seams, even when a GOP's dead tail (left undecoded) ends the file
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in pairwise(pts))
    assert [round(b - a, 3) for a, b in pairwise(pts[:75])] == [0.2] * 74
    assert pts[74] == pytest.approx(14.8, abs=0.05)
    # and each loop starts at its right time: the sample at 6 s is the clip's first frame again
    assert round(pts[30], 3) == 6.0 and np.array_equal(frames[30].image, frames[0].image)
    assert source.state.status == "stopped"


def test_a_missing_file_is_an_error_in_the_state_and_the_camera_backs_off(tmp_path: Path) -> None:
    # given
    settings = CameraSettings(name="gone", url=str(tmp_path / "nope.mp4"), backoff={"initial_s": 30, "max_s": 30})
    source = CameraSource(settings).start()

    # when
    in_backoff = wait_for(lambda: source.state.status == "backoff", 10)
    state = source.state
    source.stop()

    # then
    assert in_backoff
    assert state.last_error == f"camera 'gone': {tmp_path / 'nope.mp4'}: no such file or device"
    assert state.next_retry_at is not None


def _damage(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    if how == "truncated":
        data = data[: int(len(data) * 0.6) + 7]  # cut inside a NAL unit
    else:  # garbage in the middle
        rng = random.Random(11)
        middle = len(data) // 2
        data[middle : middle + 40_000] = bytes(rng.getrandbits(8) for _ in range(40_000))
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("source_clip", "how", "kinds"),
    [
        ("h264", "truncated", {"corrupt", "decode"}),
        ("h264", "garbage", {"corrupt", "decode"}),
        ("mp4", "garbage", {"corrupt", "decode"}),
    ],
)
def test_a_damaged_stream_is_logged_counted_and_recovered(
    source_clip: str, how: str, kinds: set[str], clip_720p: Path, clip_h264: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a damaged file played in a loop (each loop crosses the damage)
    clip = clip_h264 if source_clip == "h264" else clip_720p
    damaged = _damage(clip, tmp_path / f"damaged.{source_clip}", how)
    metrics = Metrics()
    settings = CameraSettings(name="dmg", url=str(damaged), sample_fps=5, loop=True, realtime=False)

    # when 75 samples are taken: 15 s of video when the damage costs no sample, more than two passes
    # (_collect may return a few more: the source runs on until it is stopped)
    with caplog.at_level(logging.WARNING, logger="streamd.sources"):
        frames, source = _collect(settings, 75, metrics)

    # then logged
    assert any(w in caplog.text for w in ("frame with decoding errors skipped", "damaged packet skipped"))
    # counted
    errors = {k: _metric(metrics, "streamd_stream_errors_total", camera="dmg", kind=k) for k in kinds}
    assert sum(errors.values()) > 0, errors
    # recovered: frames kept coming across several passes over the damage, on one connection
    duration = 3.0 if source_clip == "h264" else 6.0
    assert frames[-1].pts > 2 * duration * (0.6 if how == "truncated" else 1.0)
    assert _metric(metrics, "streamd_reconnects_total", camera="dmg") == 0
    assert source.state.last_error is None


def test_garbage_instead_of_a_file_is_a_clear_open_error(tmp_path: Path) -> None:
    # given random bytes, fixed ones: about 1 in 300 random 4 KiB files probes as a lyrics (.lrc)
    # file, which opens and has no video stream (another clear error, but not this one)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(random.Random(0).randbytes(4096))
    source = CameraSource(CameraSettings(name="junk", url=str(junk), backoff={"initial_s": 30, "max_s": 30})).start()

    # when
    wait_for(lambda: source.state.status == "backoff", 10)
    state = source.state
    source.stop()

    # then
    assert state.last_error is not None
    assert state.last_error.startswith(f"camera 'junk': cannot open {junk}: ")


def test_frames_convert_to_the_same_bgr_as_swscale(clip_720p: Path) -> None:
    # given real decoded camera frames (limited-range yuv420p, 1280x720)
    import av
    import numpy as np

    from streamd.sources.pyav_source import frame_to_bgr

    with av.open(str(clip_720p)) as container:
        frames = [f for _, f in zip(range(30), container.decode(video=0), strict=False)][::10]
    assert frames and frames[0].format.name == "yuv420p"
    for frame in frames:
        # when the fast path converts them
        fast = frame_to_bgr(frame)
        reference = frame.to_ndarray(format="bgr24")
        # then the pixels are swscale's, to rounding (and chroma upsampling at sharp colour edges)
        assert fast.shape == reference.shape == (720, 1280, 3) and fast.dtype == np.uint8
        diff = np.abs(fast.astype(np.int16) - reference.astype(np.int16))
        assert diff.mean() < 2.0 and np.percentile(diff, 99.9) <= 3 and diff.max() <= 8


def test_full_range_and_odd_sized_frames_take_swscale() -> None:
    import av
    import numpy as np

    from streamd.sources.pyav_source import frame_to_bgr

    rng = np.random.default_rng(0)
    full = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="bgr24")
    full = full.reformat(format="yuv420p", dst_color_range=2)
    full.color_range = 2
    np.testing.assert_array_equal(frame_to_bgr(full), full.to_ndarray(format="bgr24"))
    odd = av.VideoFrame.from_ndarray(rng.integers(0, 256, (47, 63, 3), dtype=np.uint8), format="bgr24")
    odd = odd.reformat(format="yuv420p")
    np.testing.assert_array_equal(frame_to_bgr(odd), odd.to_ndarray(format="bgr24"))

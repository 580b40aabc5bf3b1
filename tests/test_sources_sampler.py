"""Sampling by timestamps and the choice of keyframe-only decoding."""

from __future__ import annotations

import random

import pytest

from streamd.sources.decode_mode import KeyframeMeter, choose_mode
from streamd.sources.sampler import Sampler


def _kept(sampler: Sampler, pts_list: list[float]) -> list[tuple[float, int]]:
    return [(round(p, 3), sampler.skipped) for p in pts_list if sampler.offer(p)]


def test_25_fps_sampled_at_5_fps_keeps_every_fifth_frame_and_says_four_were_skipped() -> None:
    # given
    sampler = Sampler(5.0)
    pts = [i / 25 for i in range(50)]

    # when
    kept = _kept(sampler, pts)

    # then
    assert [p for p, _ in kept] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
    assert [s for _, s in kept] == [0, 4, 4, 4, 4, 4, 4, 4, 4, 4]


@pytest.mark.parametrize(("source_fps", "sample_fps"), [(30.0, 7.0), (29.97, 5.0), (12.5, 2.0), (25.0, 3.0)])
def test_the_average_rate_is_the_sample_rate_whatever_the_source_rate(source_fps: float, sample_fps: float) -> None:
    # given 60 s of frames
    sampler = Sampler(sample_fps)
    pts = [i / source_fps for i in range(int(60 * source_fps))]

    # when
    kept = _kept(sampler, pts)

    # then the count matches the duration within one frame
    assert abs(len(kept) - 60 * sample_fps) <= 1


def test_jittery_timestamps_do_not_lose_frames_at_the_source_rate() -> None:
    # given a 5 fps camera whose timestamps jitter by up to 10 ms, sampled at 5 fps
    rng = random.Random(7)
    sampler = Sampler(5.0)
    pts = [i * 0.2 + rng.uniform(-0.01, 0.01) for i in range(100)]

    # when
    kept = _kept(sampler, pts)

    # then every frame is kept
    assert len(kept) == 100


def test_timestamps_going_back_restart_the_schedule() -> None:
    # given a file that loops back to 0 after 1 s
    sampler = Sampler(5.0)
    pts = [i / 25 for i in range(25)] + [i / 25 for i in range(10)]

    # when
    kept = [p for p, _ in _kept(sampler, pts)]

    # then the restart is sampled at once
    assert kept == [0.0, 0.2, 0.4, 0.6, 0.8, 0.0, 0.2]


def test_a_gap_in_the_stream_resumes_sampling_without_a_burst() -> None:
    # given 1 s of video, a 10 s gap, then 1 s more
    sampler = Sampler(5.0)
    pts = [i / 25 for i in range(25)] + [11 + i / 25 for i in range(25)]

    # when
    kept = [p for p, _ in _kept(sampler, pts)]

    # then
    assert kept[5:] == [11.0, 11.2, 11.4, 11.6, 11.8]


def test_frames_the_decoder_skipped_count_as_skipped() -> None:
    # given keyframes only (one per second of a 25 fps stream), sampled at 1 fps
    sampler = Sampler(1.0)

    # when
    first = sampler.offer(0.0, unseen=0)
    second = sampler.offer(1.0, unseen=24)

    # then
    assert first and second
    assert sampler.skipped == 24


def test_sample_fps_must_be_positive() -> None:
    # given / when / then
    with pytest.raises(ValueError, match="sample fps must be > 0, got 0"):
        Sampler(0)


def test_the_keyframe_meter_needs_two_intervals_and_takes_the_median() -> None:
    # given
    meter = KeyframeMeter()

    # when / then
    meter.add(0.0)
    meter.add(2.0)
    assert meter.interval is None
    meter.add(4.0)
    meter.add(4.5)  # a stray keyframe (scene cut)
    meter.add(6.5)
    assert meter.interval == 2.0


def test_the_keyframe_meter_restarts_when_timestamps_go_back() -> None:
    # given
    meter = KeyframeMeter()
    for pts in (0.0, 1.0, 2.0):
        meter.add(pts)

    # when
    meter.add(0.0)

    # then
    assert meter.interval is None


@pytest.mark.parametrize(
    ("setting", "sample_fps", "interval", "mode"),
    [
        ("auto", 5.0, None, "full"),
        ("auto", 5.0, 1.0, "full"),  # 1 keyframe/s < 5 samples/s
        ("auto", 1.0, 1.0, "keyframes"),  # at the keyframe rate
        ("auto", 5.0, 0.2, "keyframes"),  # a keyframe every 5th frame of 25 fps
        ("auto", 5.0, 0.2005, "keyframes"),  # timestamp rounding
        ("auto", 0.5, 2.0, "keyframes"),
        ("auto", 1.0, 2.0, "full"),
        ("full", 0.1, 1.0, "full"),
        ("keyframes", 25.0, None, "keyframes"),
    ],
)
def test_keyframes_only_when_the_sample_rate_is_at_or_below_the_keyframe_rate(setting, sample_fps, interval, mode) -> None:  # type: ignore[no-untyped-def]
    # given / when / then
    assert choose_mode(setting, sample_fps, interval) == mode


def test_a_keyframe_split_over_several_packets_counts_once() -> None:
    # given keyframes every second, each sent as two packets with the same pts (two slices)
    meter = KeyframeMeter()

    # when
    for pts in (0.0, 0.0, 1.0, 1.0, 2.0, 2.0):
        meter.add(pts)

    # then
    assert meter.interval == 1.0

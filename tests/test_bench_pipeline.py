"""`streamd bench pipeline`: track scoring against a scene's truth, the capacity search, and a CLI smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.bench.pipeline import command, find_capacity
from streamd.bench.pipeline_trial import TrialReport
from streamd.bench.scenes import Appearance, SceneClip
from streamd.bench.scoring import accuracy, merge, score_tracks
from streamd.types import IdentityEvent

FPS = 5
BOX_ANA = (100.0, 100.0, 200.0, 220.0)
BOX_ZED = (700.0, 100.0, 800.0, 220.0)


def clip() -> SceneClip:
    """10 s at 5 fps: Ana (enrolled) fully in view from 1.0 s to 9 s, Zed (never enrolled) from 2.0 s."""
    truth = []
    for k in range(50):
        t = k / FPS
        faces = []
        if 0.8 <= t <= 9.0:
            faces.append(("Ana", BOX_ANA, 0.5 if t < 1.0 else 1.0))
        if 2.0 <= t <= 9.0:
            faces.append(("Zed", BOX_ZED, 1.0))
        truth.append(tuple(faces))
    appearances = (Appearance("Ana", True, 0.8, 9.0, 0), Appearance("Zed", False, 2.0, 9.0, 1))
    return SceneClip(Path("x.mp4"), 1280, 720, FPS, 5, 50, appearances, tuple(truth))


def event(kind: str, track: int, label: str | None, box: tuple, ts: float) -> IdentityEvent:
    return IdentityEvent(f"{kind}-{track}-{ts}", kind, "cam", track, label, 0.7, 0.3, box, ts, ts)


def test_tracks_are_matched_to_people_and_scored() -> None:
    # given Ana named 0.6 s after she is fully in view, Zed named as Ana (wrong), a false track
    events = [
        event("new", 1, None, BOX_ANA, 1001.2), event("identified", 1, "Ana", BOX_ANA, 1001.6),
        event("new", 2, None, BOX_ZED, 1002.4), event("identified", 2, "Ana", BOX_ZED, 1003.0),
        event("new", 3, None, (400.0, 400.0, 450.0, 450.0), 1004.0),
        event("end", 1, "Ana", BOX_ANA, 1009.0), event("end", 2, "Ana", BOX_ZED, 1009.0),
        event("end", 3, None, (400.0, 400.0, 450.0, 450.0), 1005.0),
    ]
    # the frames behind the events, by their capture time (video time = wall - 1000)
    pts = {("cam", e.frame_ts): e.frame_ts - 1000.0 for e in events if e.type != "end"}
    # when
    tracks = score_tracks(events, pts, {"cam": clip()})
    figures = accuracy(tracks)
    # then
    assert {(t.track_id, t.truth, t.enrolled) for t in tracks} == {(1, "Ana", True), (2, "Zed", False), (3, None, False)}
    assert (figures.enrolled_tracks, figures.named_correctly) == (1, 1)
    assert (figures.strangers_tracks, figures.strangers_named) == (1, 1)
    assert figures.misnamed == ("Zed -> Ana/Ana",)
    assert figures.unmatched_tracks == 1 and figures.unmatched_named == 0
    assert figures.times_to_identify == pytest.approx((0.6,))


def test_a_track_in_a_later_loop_of_the_clip_is_matched_in_that_loop() -> None:
    # given the clip looped: Ana's second appearance starts 10 s later
    events = [event("new", 7, None, BOX_ANA, 2011.4), event("identified", 7, "Ana", BOX_ANA, 2012.0)]
    pts = {("cam", e.frame_ts): e.frame_ts - 2000.0 for e in events}
    # when
    (track,) = score_tracks(events, pts, {"cam": clip()})
    # then time to identify counts from the second loop's first full view (11.0 s)
    assert track.truth == "Ana"
    assert track.time_to_identify == pytest.approx(1.0)


def test_figures_of_runs_played_in_turns_add_up() -> None:
    # given the same run twice
    events = [event("new", 1, None, BOX_ANA, 1001.2), event("identified", 1, "Ana", BOX_ANA, 1001.6)]
    pts = {("cam", e.frame_ts): e.frame_ts - 1000.0 for e in events}
    one = accuracy(score_tracks(events, pts, {"cam": clip()}))
    # when merged
    both = merge([one, one])
    # then counts add up and the times to identify are pooled
    assert (both.enrolled_tracks, both.named_correctly) == (2, 2)
    assert both.times_to_identify == pytest.approx((0.6, 0.6))


def test_capacity_is_found_by_doubling_then_bisecting() -> None:
    # given a system that keeps up with at most 5 streams
    asked: list[int] = []

    def trial(n: int) -> TrialReport:
        asked.append(n)
        return TrialReport("streamd", n, expected=10.0 * n, processed=10 * n if n <= 5 else 5 * n)

    # when
    capacity, runs = find_capacity(trial, 16, echo=lambda _line: None)
    # then
    assert capacity == 5
    assert asked == [1, 2, 4, 8, 6, 5]
    assert set(runs) == set(asked)


@pytest.mark.shared
def test_the_command_prints_every_figure(tmp_path: Path, models_dir: Path, faces_dir: Path) -> None:
    # given tiny settings: one 6 s clip, one stream, short trials
    args = [
        "--models-dir", str(models_dir), "--faces-dir", str(faces_dir), "--work-dir", str(tmp_path / "work"),
        "--clips", "1", "--clip-seconds", "6", "--streams", "1", "--duration", "3", "--warmup", "1",
        "--skip", "naive", "--skip", "keyframes", "--skip", "modes", "--json", str(tmp_path / "out.json"),
    ]
    # when
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    # then
    assert result.exit_code == 0, result.output
    assert "1 streams: keeps up" in result.output
    assert "frame-to-decision at 1 stream: p50" in result.output
    assert "enrolled people's tracks named correctly" in result.output
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["capacity"]["streams"] == 1
    assert data["accuracy"]["enrolled_tracks"] >= 1

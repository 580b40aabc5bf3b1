"""The daemon on RTSP cameras (a real GStreamer RTSP server process) with the real ONNX engine.

- The lane scene (tests/streams.py): two enrolled and two never-enrolled people from real photos,
  one per lane; the enrolled are named, the others never are (with both worker modes).
- The real Hamilton clip with Lin-Manuel Miranda and Alex Lacamoire enrolled: Lin is named, and
  nobody else. Alex Lacamoire is in the clip only as a face of about 25x35 pixels for ~0.6 s, under
  the quality gate's 40 px minimum, so he is tracked but never embedded, hence never named.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rtsp import RtspServer, require_rtsp_server, wait_for
from streams import (  # noqa: F401 (fixtures)
    LaneScene,
    engine_settings,
    hamilton_clip,
    hamilton_index,
    lane_scene,
    no_leaked_threads,
)

from streamd.app import App
from streamd.settings import EngineSettings, Settings
from streamd.types import IdentityEvent

pytestmark = [pytest.mark.shared, pytest.mark.usefixtures("no_leaked_threads")]


def daemon_settings(tmp_path: Path, engine: EngineSettings, index_dir: Path, url: str, **pipeline: object) -> Settings:
    return Settings(
        engine=engine,
        index={"dir": index_dir, "watch": False},
        mqtt={"enabled": False},
        http={"enabled": False},
        snapshots={"dir": tmp_path / "snapshots"},
        pipeline={"workers": 2, **pipeline},
        cameras=[{"name": "door", "url": url, "sample_fps": 5, "connect_timeout_s": 10, "stall_timeout_s": 10}],
    )


def run_until(settings: Settings, done, timeout: float) -> tuple[list[IdentityEvent], bool]:  # type: ignore[no-untyped-def]
    """Run the daemon until ``done(events)`` or ``timeout`` s; its events and whether stop drained in time."""
    events: list[IdentityEvent] = []
    app = App.from_settings(settings, on_event=events.append).start()
    try:
        wait_for(lambda: done(list(events)), timeout, interval=0.2)
    finally:
        drained = app.stop(15.0)
    return events, drained


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_enrolled_people_are_named_and_never_enrolled_people_never_are(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene, mode: str  # noqa: F811
) -> None:
    # given the lane scene served by an RTSP server, and a daemon watching it
    require_rtsp_server()
    enrolled_lanes = {lane for lane, e in enumerate(lane_scene.enrolled) if e}

    started = time.monotonic()

    def done(events: list[IdentityEvent]) -> bool:
        named = {lane_scene.lane_of(e) for e in events if e.type == "identified"}
        return enrolled_lanes <= named and time.monotonic() - started > lane_scene.clip.duration_s

    with RtspServer(lane_scene.clip.path) as server:
        settings = daemon_settings(tmp_path, engine_settings, lane_scene.index_dir, server.url, worker_mode=mode)
        # when it watches a whole loop of the clip and until both enrolled people are named (at most 40 s)
        events, drained = run_until(settings, done, 40.0)

    # then each enrolled person is named in their lane, and nobody in the other lanes gets a name
    by_lane: dict[int, set[str | None]] = {}
    for e in events:
        by_lane.setdefault(lane_scene.lane_of(e), set()).add(e.label)
    for lane, (label, enrolled) in enumerate(zip(lane_scene.labels, lane_scene.enrolled)):
        if enrolled:
            assert label in by_lane.get(lane, set()), f"{label} (lane {lane}) was never named: {by_lane}"
            assert by_lane[lane] <= {label, None}, f"lane {lane} ({label}) got another name: {by_lane[lane]}"
        else:
            assert by_lane.get(lane, {None}) == {None}, f"never-enrolled {label} was named: {by_lane[lane]}"
    # and every track announced was ended by the drain
    assert drained
    tracks = {e.track_id for e in events if e.type == "new"}
    assert {e.track_id for e in events if e.type == "end"} == tracks


def test_the_hamilton_clip_names_lin_manuel_miranda_and_nobody_else(
    tmp_path: Path, engine_settings: EngineSettings, hamilton_index: Path, hamilton_clip: Path  # noqa: F811
) -> None:
    # given the real clip (640x360 H.264) served over RTSP, with Lin and Alex enrolled
    require_rtsp_server()
    with RtspServer(hamilton_clip) as server:
        settings = daemon_settings(tmp_path, engine_settings, hamilton_index, server.url)
        # when the daemon watches one full loop of the clip (9.2 s) and a bit
        started = time.monotonic()
        events, drained = run_until(settings, lambda ev: time.monotonic() - started > 11.0, 30.0)

    # then Lin-Manuel Miranda is identified and no one else is given a name
    named = {e.label for e in events if e.label is not None}
    assert "Lin_Manuel_Miranda" in {e.label for e in events if e.type == "identified"}
    assert named == {"Lin_Manuel_Miranda"}
    assert drained

"""The daemon wired from settings (App) with real parts: ONNX engine, index, mosquitto, HTTP, video files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import pytest
from conftest import free_port
from mosquitto import Mosquitto, Subscriber
from rtsp import wait_for
from streams import (  # noqa: F401 (fixtures)
    LaneScene,
    engine_settings,
    hamilton_clip,
    hamilton_index,
    lane_scene,
    no_leaked_threads,
)

from streamd.app import App, camera_status_payload
from streamd.errors import ModelError
from streamd.settings import EngineSettings, Settings
from streamd.sources.state import CameraState
from streamd.types import IdentityEvent

pytestmark = [pytest.mark.shared, pytest.mark.usefixtures("no_leaked_threads")]


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((resources.files("streamd") / "schemas" / name).read_text()))


def settings_for(tmp_path: Path, engine: EngineSettings, index_dir: Path, cameras: list[dict], **sections: dict) -> Settings:
    values: dict = {
        "engine": engine,
        "index": {"dir": index_dir, "watch": False},
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "snapshots": {"dir": tmp_path / "snapshots"},
        "pipeline": {"workers": 2},
        "cameras": cameras,
    }
    values.update(sections)
    return Settings(**values)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    client = Subscriber(broker, ["streamd/#"])
    yield client
    client.close()


def test_the_daemon_names_people_publishes_events_serves_its_api_and_drains(
    tmp_path: Path, engine_settings: EngineSettings, hamilton_index: Path, hamilton_clip: Path,  # noqa: F811
    broker: Mosquitto, subscriber: Subscriber,
) -> None:
    # given a broker, and a daemon with MQTT, HTTP on a free port and the Hamilton clip as a camera
    events: list[IdentityEvent] = []
    settings = settings_for(
        tmp_path, engine_settings, hamilton_index,
        [{"name": "stage", "url": str(hamilton_clip), "realtime": True}],
        mqtt={"host": "127.0.0.1", "port": broker.port, "spool_dir": tmp_path / "spool"},
        http={"port": free_port()},
    )
    app = App.from_settings(settings, on_event=events.append).start()
    try:
        # when the clip plays to its end
        assert wait_for(lambda: app.camera_states()[0].status == "ended", 30, interval=0.2)
        base = app.http.url
        ready = httpx.get(f"{base}/readyz", timeout=5)
        cameras = httpx.get(f"{base}/api/cameras", timeout=5).json()["cameras"]
        recent = httpx.get(f"{base}/api/events/recent", params={"type": "identified"}, timeout=5).json()["events"]
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        drained = app.stop(15.0)
    # then Lin-Manuel Miranda was identified, on every output
    assert "Lin_Manuel_Miranda" in {e.label for e in events if e.type == "identified"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"index": "ok", "engine": "ok", "mqtt": "ok"}
    assert [(c["camera"], c["status"]) for c in cameras] == [("stage", "ended")]
    assert "Lin_Manuel_Miranda" in {e["label"] for e in recent}
    assert 'streamd_faces_embedded_total{camera="stage"}' in metrics
    assert 'streamd_frame_to_decision_seconds_count{camera="stage"}' in metrics
    assert subscriber.wait_for(
        lambda msgs: any(m.topic == "streamd/events" and json.loads(m.payload)["type"] == "identified" for m in msgs)
    )
    for message in subscriber.on("streamd/events"):
        schema("event.json").validate(json.loads(message.payload))
    published = [json.loads(m.payload) for m in subscriber.on("streamd/stage/events")]
    assert {p["event_id"] for p in published} == {e.event_id for e in events}
    assert subscriber.wait_for(lambda msgs: any(m.topic == "streamd/stage/person/Lin_Manuel_Miranda/snapshot"
                                                for m in msgs))
    assert subscriber.on("streamd/stage/person/Lin_Manuel_Miranda/snapshot")[-1].payload[:2] == b"\xff\xd8"
    statuses = [json.loads(m.payload) for m in subscriber.on("streamd/stage/status")]
    for status in statuses:
        schema("camera_status.json").validate(status)
    assert statuses[-1]["state"] == "stopped"
    index_state = json.loads(subscriber.on("streamd/index/state")[-1].payload)
    assert (index_state["vectors"], index_state["labels"]) == (4, 2)
    # and the drain ended every track it had announced
    assert drained
    assert {e.track_id for e in events if e.type == "end"} == {e.track_id for e in events if e.type == "new"}


@pytest.mark.parametrize(
    "status", ["idle", "connecting", "streaming", "backoff", "ended", "stopped"],
)
def test_every_camera_state_gives_a_valid_mqtt_status(status: str) -> None:
    # given
    state = CameraState("door", status=status, since=1.0, next_retry_at=5.0 if status == "backoff" else None,
                        last_error="camera 'door': cannot open rtsp://***@cam/1: refused", attempts=2)
    # when
    payload = {"camera": "door", "updated_at": 2.0, **camera_status_payload(state)}
    # then
    schema("camera_status.json").validate(payload)
    assert (payload["error"] is None) == (status == "streaming")
    assert camera_status_payload(state, enabled=False)["state"] == "disabled"


def test_camera_changes_restart_only_the_changed_cameras(
    tmp_path: Path, engine_settings: EngineSettings, lane_scene: LaneScene  # noqa: F811
) -> None:
    # given three looping cameras
    def cam(name: str, fps: float = 5.0) -> dict:
        return {"name": name, "url": str(lane_scene.clip.path), "loop": True, "sample_fps": fps}

    events: list[IdentityEvent] = []
    settings = settings_for(tmp_path, engine_settings, lane_scene.index_dir, [cam("a"), cam("b"), cam("c")])
    app = App.from_settings(settings, on_event=events.append).start()
    try:
        assert wait_for(lambda: {e.camera for e in events if e.type == "new"} == {"a", "b", "c"}, 30, interval=0.2)
        kept = app._cameras["a"].source
        # when the configuration drops b, changes c and adds d
        diff = app.apply_cameras(Settings(cameras=[cam("a"), cam("c", 2.0), cam("d")]).cameras)
        assert wait_for(lambda: any(e.camera == "d" and e.type == "new" for e in events), 30, interval=0.2)
        states = {s.camera: s.status for s in app.camera_states()}
    finally:
        drained = app.stop(15.0)
    # then only c restarts, b's tracks are ended, a runs on untouched
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (("d",), ("b",), ("c",), ("a",))
    assert app._cameras == {}
    assert kept.settings.name == "a" and not kept.running
    assert set(states) == {"a", "c", "d"} and states["a"] == "streaming"
    b_new = {e.track_id for e in events if e.camera == "b" and e.type == "new"}
    assert b_new and {e.track_id for e in events if e.camera == "b" and e.type == "end"} == b_new
    assert drained


def test_a_missing_model_fails_before_anything_runs(tmp_path: Path, engine_settings: EngineSettings) -> None:
    # given an embedder file that does not exist
    missing = tmp_path / "nope.onnx"
    engine = engine_settings.model_copy(update={"embedder": engine_settings.embedder.model_copy(update={"model_path": missing})})
    settings = settings_for(tmp_path, engine, tmp_path / "index", [])
    # when / then the error is the engine's one line naming the file
    with pytest.raises(ModelError, match=f"^{missing}: model file not found"):
        App.from_settings(settings)


def test_without_an_index_the_daemon_runs_unready_until_a_watched_gallery_enrols_people(
    tmp_path: Path, engine_settings: EngineSettings, hamilton_clip: Path, faces_dir: Path  # noqa: F811
) -> None:
    # given no index yet, and a gallery folder the daemon watches, empty for now
    gallery = tmp_path / "gallery"
    (gallery / "images").mkdir(parents=True)
    settings = settings_for(
        tmp_path, engine_settings, tmp_path / "index",
        [{"name": "stage", "url": str(hamilton_clip), "loop": True}],
        index={"dir": tmp_path / "index", "watch": True, "debounce_s": 0.2},
        gallery={"data_root": gallery, "watch": True, "debounce_s": 0.2},
        http={"port": free_port()},
    )
    events: list[IdentityEvent] = []
    app = App.from_settings(settings, on_event=events.append).start()
    try:
        # when faces are seen before anyone is enrolled
        assert wait_for(lambda: any(e.type == "new" for e in events), 30, interval=0.2)
        unready = httpx.get(f"{app.http.url}/readyz", timeout=5)
        unnamed_before = all(e.label is None for e in events)
        # and then Lin-Manuel Miranda's photo is put into the gallery
        person = gallery / "images" / "Lin_Manuel_Miranda"
        shutil.copytree(faces_dir / "identities_small" / "Lin_Manuel_Miranda", person)
        named = wait_for(lambda: any(e.label == "Lin_Manuel_Miranda" for e in events), 40, interval=0.2)
        ready = httpx.get(f"{app.http.url}/readyz", timeout=5)
    finally:
        app.stop(15.0)
    # then the daemon said why it was not ready and named nobody; once enrolled, Lin is named
    assert unready.status_code == 503
    assert unready.json()["checks"]["index"] == "no serving index loaded yet"
    assert unnamed_before
    assert named
    assert ready.status_code == 200

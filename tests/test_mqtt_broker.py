"""MqttPublisher against a real mosquitto started by the test (never the system broker on 1883).

Payloads received from the broker are validated against streamd/schemas; retained topics are
checked with a second subscriber that connects afterwards (it gets only retained messages).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from importlib import resources
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from mosquitto import Mosquitto, Received, Subscriber, make_event, make_pki, wait_until
from streamd.metrics import Metrics
from streamd.sinks.config import MqttSettings
from streamd.sinks.mqtt import MqttPublisher

PASSWORD = "pw-Zq7!never-logged"


def schema(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads((resources.files("streamd") / "schemas" / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def settings_for(broker: Mosquitto, tmp_path: Path, **fields) -> MqttSettings:
    values = {
        "host": "127.0.0.1",
        "port": broker.port,
        "spool_dir": tmp_path / "spool",
        "client_id": f"streamd-test-{uuid.uuid4().hex[:8]}",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        **fields,
    }
    return MqttSettings(**values)


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_publisher():
    made: list[MqttPublisher] = []

    def make(settings: MqttSettings, **kwargs) -> MqttPublisher:
        publisher = MqttPublisher(settings, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.stop(1.0)


@pytest.fixture
def make_subscriber():
    made: list[Subscriber] = []

    def make(broker: Mosquitto, topics: list[str], **kwargs) -> Subscriber:
        sub = Subscriber(broker, topics, **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def events_on(sub: Subscriber, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(topic)]


def retained(sub: Subscriber) -> dict[str, Received]:
    return {m.topic: m for m in sub.messages if m.retain}


def jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((32, 32, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_payloads_match_schemas_and_state_is_retained(
    protocol: str, broker: Mosquitto, tmp_path: Path, make_publisher, make_subscriber
) -> None:
    # given a subscriber on everything and a connected publisher
    sub = make_subscriber(broker, ["streamd/#"])
    metrics = Metrics()
    publisher = make_publisher(settings_for(broker, tmp_path, protocol=protocol), metrics=metrics)
    publisher.start()
    assert publisher.wait_connected(10), publisher.last_error

    # when a track's events, a second camera's event, camera and index state and a snapshot are published
    track = [
        make_event("door", "new", None, track_id=7),
        make_event("door", "identified", "alice", track_id=7),
        make_event("door", "update", "alice", track_id=7),
        make_event("door", "end", "alice", track_id=7),
    ]
    garden = make_event("garden", "new", None, track_id=1)
    for event in track + [garden]:
        assert publisher.publish_event(event)
    now = time.time()
    publisher.publish_camera_status("door", {"state": "streaming", "since": now})
    publisher.publish_camera_status(
        "garden", {"state": "backoff", "next_retry_at": now + 8, "retries": 3, "error": "connection refused"}
    )
    publisher.publish_index_state({"generation": 2, "vectors": 40, "labels": 4, "loaded_at": now})
    publisher.publish_snapshot("door", "alice", jpeg())
    assert publisher.wait_idle(10)
    assert sub.wait_for(lambda ms: sum(m.topic.endswith("/events") for m in ms) == 10)
    assert sub.wait_for(lambda ms: sum(m.topic == "streamd/index/state" for m in ms) == 1)

    # then every event arrived once on both topics, valid, in order, numbered per camera
    all_events = events_on(sub, "streamd/events")
    for payload in all_events:
        schema("event.json").validate(payload)
    assert [e["event_id"] for e in all_events] == [e.event_id for e in track + [garden]]
    door = events_on(sub, "streamd/door/events")
    assert [e["event_id"] for e in door] == [e.event_id for e in track]
    assert [e["seq"] for e in door] == [1, 2, 3, 4]
    assert [e["seq"] for e in events_on(sub, "streamd/garden/events")] == [1]
    assert door[1]["latency_ms"] == pytest.approx(40.0, abs=0.2)
    assert metrics.events_published.labels("identified")._value.get() == 1
    assert metrics.mqtt_connected._value.get() == 1
    # a persistent session: clean session / clean start off (mosquitto logs "(p2, c0" / "(p5, c0")
    level = "p2" if protocol == "3.1.1" else "p5"
    assert f"as {publisher.settings.client_id} ({level}, c0," in broker.log()

    # and the state topics are valid
    presence = events_on(sub, "streamd/presence/alice")[-1]
    schema("presence.json").validate(presence)
    assert (presence["state"], presence["camera"]) == ("home", "door")
    for camera in ("door", "garden"):
        schema("camera_status.json").validate(events_on(sub, f"streamd/{camera}/status")[-1])
    schema("index_state.json").validate(events_on(sub, "streamd/index/state")[-1])
    schema("available.json").validate(sub.on("streamd/available")[-1].payload.decode())

    # and a subscriber connecting later gets the state, retained, but no event
    late = make_subscriber(broker, ["streamd/#"])
    assert late.wait_for(lambda ms: len(ms) >= 6)
    time.sleep(0.2)
    kept = retained(late)
    assert set(kept) == {
        "streamd/available", "streamd/presence/alice", "streamd/door/status", "streamd/garden/status",
        "streamd/index/state", "streamd/door/person/alice/snapshot",
    }
    assert kept["streamd/available"].payload == b"online"
    assert kept["streamd/door/person/alice/snapshot"].payload == jpeg()
    assert not [m for m in late.messages if m.topic.endswith("/events")]


def test_clean_stop_flushes_then_publishes_offline_retained(
    broker: Mosquitto, tmp_path: Path, make_subscriber
) -> None:
    # given a connected publisher with events just queued
    sub = make_subscriber(broker, ["streamd/events", "streamd/available"])
    publisher = MqttPublisher(settings_for(broker, tmp_path))
    publisher.start()
    assert publisher.wait_connected(10)
    events = [make_event("door", "new", None, track_id=i) for i in range(3)]
    for event in events:
        publisher.publish_event(event)

    # when it stops at once
    publisher.stop(2.0)

    # then the events were sent first, then availability went offline, retained; the spool is empty
    assert sub.wait_for(lambda ms: ms and ms[-1].payload == b"offline")
    got = [m for m in sub.messages if m.topic == "streamd/events"]
    assert [json.loads(m.payload)["event_id"] for m in got] == [e.event_id for e in events]
    assert publisher.spool_depth == 0
    late = make_subscriber(broker, ["streamd/available"])
    assert late.wait_for(lambda ms: len(ms) == 1)
    assert late.messages[0] == Received("streamd/available", b"offline", True, 1)


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    # given a publisher whose queue holds one event and whose thread is not running
    metrics = Metrics()
    publisher = MqttPublisher(MqttSettings(spool_dir=tmp_path / "spool", queue_size=1), metrics=metrics)

    # when two events are published
    first = publisher.publish_event(make_event())
    second = publisher.publish_event(make_event())

    # then the second is refused at once and counted
    assert (first, second) == (True, False)
    assert metrics.events_dropped.labels("queue_full")._value.get() == 1


_KILLED_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from streamd.sinks.config import MqttSettings
    from streamd.sinks.mqtt import MqttPublisher

    publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=int(sys.argv[1]), spool_dir=Path(sys.argv[2]),
                                           client_id="streamd-will-test"))
    publisher.start()
    assert publisher.wait_connected(10), publisher.last_error
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_last_will_offline_when_the_daemon_dies(broker: Mosquitto, tmp_path: Path, make_subscriber) -> None:
    # given a publisher in another process, online
    sub = make_subscriber(broker, ["streamd/available"])
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PUBLISHER, str(broker.port), str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert sub.wait_for(lambda ms: ms and ms[-1].payload == b"online")

        # when the process is killed (no DISCONNECT is sent)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    # then the broker publishes the last will: offline, and keeps it retained
    assert sub.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=10)
    late = make_subscriber(broker, ["streamd/available"])
    assert late.wait_for(lambda ms: len(ms) == 1)
    assert late.messages[0] == Received("streamd/available", b"offline", True, 1)


def test_tls_with_client_certificate_and_password_file(tmp_path: Path, make_publisher, make_subscriber) -> None:
    # given a broker with TLS that requires a client certificate and a password
    broker = Mosquitto(tmp_path / "broker", users={"cam": PASSWORD}, tls=True, require_certificate=True)
    broker.start()
    try:
        (tmp_path / "mqtt_password").write_text(PASSWORD + "\n")
        pki = broker.pki
        settings = settings_for(
            broker, tmp_path, port=broker.tls_port, tls=True, ca_file=pki.ca_cert, certfile=pki.client_cert,
            keyfile=pki.client_key, username="cam", password_file=tmp_path / "mqtt_password",
        )
        sub = make_subscriber(broker, ["streamd/events"], username="cam", password=PASSWORD)
        publisher = make_publisher(settings)

        # when the publisher connects and sends an event
        publisher.start()
        assert publisher.wait_connected(10), publisher.last_error
        event = make_event("door", "identified", "alice")
        publisher.publish_event(event)

        # then it arrives over the TLS listener
        assert sub.wait_for(lambda ms: len(ms) == 1)
        assert json.loads(sub.messages[0].payload)["event_id"] == event.event_id
    finally:
        broker.stop()


def test_tls_with_an_unknown_ca_is_reported(tmp_path: Path, make_publisher) -> None:
    # given a TLS broker and a publisher trusting another CA
    broker = Mosquitto(tmp_path / "broker", tls=True)
    broker.start()
    try:
        other = make_pki(tmp_path / "other-pki")
        publisher = make_publisher(settings_for(broker, tmp_path, port=broker.tls_port, tls=True, ca_file=other.ca_cert))

        # when it tries to connect
        publisher.start()
        wait_until(lambda: publisher.last_error is not None)

        # then the error says the certificate check failed, and it is not connected
        assert not publisher.connected
        assert publisher.last_error.startswith(
            f"cannot connect to MQTT broker 127.0.0.1:{broker.tls_port}: TLS certificate check failed"
        )
    finally:
        broker.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_is_a_clear_error_and_never_logged(
    protocol: str, tmp_path: Path, make_publisher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a broker with a password file and a publisher with a wrong password from the environment
    broker = Mosquitto(tmp_path / "broker", users={"cam": PASSWORD})
    broker.start()
    try:
        wrong = "wrong-" + PASSWORD
        monkeypatch.setenv("STREAMD_TEST_MQTT_PW", wrong)
        caplog.set_level(logging.DEBUG)
        publisher = make_publisher(
            settings_for(broker, tmp_path, protocol=protocol, username="cam", password_env="STREAMD_TEST_MQTT_PW")
        )

        # when it tries to connect (and retries)
        publisher.start()
        wait_until(lambda: "refused" in (publisher.last_error or ""))
        time.sleep(0.5)

        # then the error names the broker and the reason; no log line holds the password
        assert publisher.last_error == (
            f"MQTT broker 127.0.0.1:{broker.port} refused the connection: Not authorized "
            "(check mqtt.username, the password and mqtt.client_id)"
        )
        assert not publisher.connected
        assert "refused the connection" in caplog.text
        assert PASSWORD not in caplog.text
    finally:
        broker.stop()


def test_presence_turns_away_after_unseen(broker: Mosquitto, tmp_path: Path, make_publisher, make_subscriber) -> None:
    # given presence turning away after 1 s
    sub = make_subscriber(broker, ["streamd/presence/#"])
    publisher = make_publisher(settings_for(broker, tmp_path, away_after_s=1.0))
    publisher.start()

    # when alice is identified once
    publisher.publish_event(make_event("door", "identified", "alice"))

    # then she is home, then away about a second later; both valid
    assert sub.wait_for(lambda ms: len(ms) >= 2, timeout=5)
    home, away = (json.loads(m.payload) for m in sub.messages[:2])
    for payload in (home, away):
        schema("presence.json").validate(payload)
    assert (home["state"], away["state"]) == ("home", "away")
    assert away["last_seen"] == home["last_seen"]
    assert away["expires_at"] is None
    assert home["expires_at"] == pytest.approx(home["last_seen"] + 1.0)


def test_home_assistant_discovery(broker: Mosquitto, tmp_path: Path, make_publisher, make_subscriber) -> None:
    # given a publisher for two cameras and two enrolled people
    publisher = make_publisher(settings_for(broker, tmp_path), cameras=["door", "garden"], labels=["alice", "bob"])
    publisher.start()
    assert publisher.wait_connected(10)
    assert publisher.wait_idle(5)
    time.sleep(0.3)

    # when Home Assistant subscribes to discovery
    ha = make_subscriber(broker, ["homeassistant/#"])
    assert ha.wait_for(lambda ms: len(ms) >= 6)
    time.sleep(0.2)

    # then each config is retained, parses, and is wired to our topics and availability
    configs = {m.topic: json.loads(m.payload) for m in ha.messages}
    assert all(m.retain for m in ha.messages)
    assert sorted(configs) == [
        "homeassistant/binary_sensor/streamd/presence_alice/config",
        "homeassistant/binary_sensor/streamd/presence_bob/config",
        "homeassistant/sensor/streamd/door_last_person/config",
        "homeassistant/sensor/streamd/door_status/config",
        "homeassistant/sensor/streamd/garden_last_person/config",
        "homeassistant/sensor/streamd/garden_status/config",
    ]
    assert len({c["unique_id"] for c in configs.values()}) == 6
    for config in configs.values():
        assert config["availability_topic"] == "streamd/available"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["state_topic"].startswith("streamd/")
    alice = configs["homeassistant/binary_sensor/streamd/presence_alice/config"]
    assert (alice["state_topic"], alice["device_class"], alice["payload_on"]) == ("streamd/presence/alice", "presence", "home")
    door = configs["homeassistant/sensor/streamd/door_last_person/config"]
    assert door["state_topic"] == "streamd/door/events"
    assert door["device"]["identifiers"] == ["streamd_door"] and door["device"]["via_device"] == "streamd"

    # and when bob is no longer enrolled, his config is removed (an empty retained message)
    publisher.set_labels(["alice"])
    assert ha.wait_for(lambda ms: ms[-1].topic.endswith("presence_bob/config") and ms[-1].payload == b"")
    later = make_subscriber(broker, ["homeassistant/#"])
    assert later.wait_for(lambda ms: len(ms) >= 5)
    time.sleep(0.2)
    assert "homeassistant/binary_sensor/streamd/presence_bob/config" not in {m.topic for m in later.messages}


def test_stale_identity_decision_is_dropped_not_sent_late(tmp_path: Path, make_publisher, make_subscriber) -> None:
    # given a persistent broker, a persistent subscriber and a publisher with max_event_age_s = 1
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    try:
        sub = make_subscriber(broker, ["streamd/events"], persistent=True, client_id="stale-sub")
        metrics = Metrics()
        publisher = make_publisher(settings_for(broker, tmp_path, max_event_age_s=1.0), metrics=metrics)
        publisher.start()
        assert publisher.wait_connected(10)

        # when the broker is down while a track is new, identified and ends, and comes back 1.5 s later
        broker.stop()
        wait_until(lambda: not publisher.connected)
        events = [make_event("door", t, None if t == "new" else "alice", track_id=3) for t in ("new", "identified", "end")]
        for event in events:
            publisher.publish_event(event)
        time.sleep(1.5)
        broker.start()

        # then new and end arrive (history), the identified decision never does, and the drop is counted
        assert publisher.wait_idle(15)
        assert sub.wait_for(lambda ms: len(ms) >= 2, timeout=10)
        time.sleep(0.3)
        got = events_on(sub, "streamd/events")
        assert [(e["type"], e["seq"]) for e in got] == [("new", 1), ("end", 3)]
        assert metrics.events_dropped.labels("too_old")._value.get() == 1
        assert metrics.events_spooled._value.get() == 3
    finally:
        broker.stop()


def test_spool_survives_a_daemon_restart(tmp_path: Path, make_subscriber) -> None:
    # given a broker that is down and a publisher that spools five events, then stops
    broker = Mosquitto(tmp_path / "broker")
    settings = settings_for(broker, tmp_path)
    metrics = Metrics()
    first = MqttPublisher(settings, metrics=metrics)
    first.start()
    events = [make_event("door", "new", None, track_id=i) for i in range(5)]
    for event in events:
        first.publish_event(event)
    assert wait_until(lambda: first.spool_depth == 5)
    first.stop(1.0)
    assert metrics.events_spooled._value.get() == 5
    assert len(list(settings.spool_dir.glob("*.json"))) == 5 + 1  # + state.json

    broker.start()
    try:
        sub = make_subscriber(broker, ["streamd/events"])

        # when a new publisher starts on the same spool with the broker up
        second = MqttPublisher(settings)
        second.start()
        later = make_event("door", "new", None, track_id=9)
        second.publish_event(later)

        # then all events arrive once, in order, and the numbering goes on
        assert sub.wait_for(lambda ms: len(ms) >= 6, timeout=10)
        assert second.wait_idle(5)
        second.stop(2.0)
        got = events_on(sub, "streamd/events")
        assert [e["event_id"] for e in got] == [e.event_id for e in events + [later]]
        assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6]
        assert list(settings.spool_dir.glob("0*.json")) == []
    finally:
        broker.stop()


def test_presence_survives_a_daemon_restart(broker: Mosquitto, tmp_path: Path, make_subscriber) -> None:
    # given alice identified by a publisher that then restarts (away after 60 s)
    settings = settings_for(broker, tmp_path, away_after_s=60.0)
    first = MqttPublisher(settings)
    first.start()
    first.publish_event(make_event("door", "identified", "alice"))
    assert first.wait_idle(5)
    first.stop(2.0)
    sub = make_subscriber(broker, ["streamd/presence/alice"])
    assert sub.wait_for(lambda ms: len(ms) == 1)
    before = json.loads(sub.messages[0].payload)

    # when the new publisher connects
    second = MqttPublisher(settings)
    second.start()
    try:
        assert second.wait_connected(10)
        assert sub.wait_for(lambda ms: len(ms) == 2)
        time.sleep(0.3)
    finally:
        second.stop(2.0)

    # then alice is still home with the same times: a restart does not flip anyone to away
    after = json.loads(sub.messages[1].payload)
    assert before["state"] == after["state"] == "home"
    assert after == before
    assert len(sub.messages) == 2

"""A 30 s broker outage while cameras keep producing events: nothing lost, nothing twice, order kept.

The broker is a real mosquitto with persistence, restarted on the same port, and the subscriber
keeps a persistent session (as Home Assistant or Node-RED would), so what the publisher sends
after the outage reaches it whichever of the two reconnects first.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest

from mosquitto import Mosquitto, Subscriber, make_event, wait_until
from streamd.metrics import Metrics
from streamd.sinks.config import MqttSettings
from streamd.sinks.mqtt import MqttPublisher

OUTAGE_S = 30.0
EVENT_EVERY_S = 0.5
TYPES = ("new", "identified", "update", "end")


@pytest.mark.slow
def test_broker_down_30s_every_event_arrives_exactly_once_in_order(tmp_path: Path) -> None:
    # given a persistent broker, a persistent subscriber and a connected publisher; identity decisions
    # may be up to 120 s old here, so the ones made during the outage are still delivered after it
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    sub = Subscriber(broker, ["streamd/events"], persistent=True, client_id="outage-sub")
    metrics = Metrics()
    publisher = MqttPublisher(
        MqttSettings(
            host="127.0.0.1", port=broker.port, spool_dir=tmp_path / "spool", client_id="outage-pub",
            reconnect_min_s=0.5, reconnect_max_s=2.0, max_event_age_s=120.0,
        ),
        metrics=metrics,
    )
    produced = []

    def produce(i: int) -> None:
        camera = ("door", "garden")[i % 2]
        event = make_event(camera, TYPES[(i // 2) % 4], None if (i // 2) % 4 == 0 else "alice", track_id=i // 8)
        assert publisher.publish_event(event)
        produced.append(event)

    try:
        publisher.start()
        assert publisher.wait_connected(10), publisher.last_error
        for i in range(10):
            produce(i)
        assert sub.wait_for(lambda ms: len(ms) == 10)
        # Acknowledged before the outage: QoS 1 may deliver an event in flight at a crash twice.
        assert publisher.wait_idle(5)

        # when the broker is down for 30 s while an event is produced every 0.5 s
        broker.stop()
        assert wait_until(lambda: not publisher.connected)
        start, i = time.monotonic(), 10
        while time.monotonic() - start < OUTAGE_S:
            produce(i)
            i += 1
            time.sleep(EVENT_EVERY_S)
        during = len(produced) - 10
        assert not publisher.connected
        assert publisher.spool_depth == during
        assert metrics.events_spooled._value.get() == during
        assert metrics.mqtt_connected._value.get() == 0

        # and it comes back while events keep coming
        broker.start()
        for j in range(10):
            produce(i + j)
        total = len(produced)

        # then every event arrives exactly once, in the order produced, numbered without a gap
        assert sub.wait_for(lambda ms: len({json.loads(m.payload)["event_id"] for m in ms}) >= total, timeout=30)
        assert publisher.wait_idle(10)
        time.sleep(0.5)  # a duplicate would arrive right behind
        # The publisher sends each event once. The broker may send the subscriber a second copy of
        # what it delivered just before it stopped: mosquitto 2.0 restores the persistent session's
        # QoS 1 state and redelivers it with the DUP flag set (MQTT's at-least-once on the
        # broker-to-subscriber leg; subscribers dedupe by event_id). Those copies are told apart by
        # their DUP flag, and must only be of events delivered before the outage.
        fresh = [m for m in sub.messages if not m.dup]
        redelivered = {json.loads(m.payload)["event_id"] for m in sub.messages if m.dup}
        before_outage = {e.event_id for e in produced[:10]}
        assert redelivered <= before_outage, "a DUP copy of an event the broker had not delivered before it stopped"
        got = [json.loads(m.payload) for m in fresh]
        counts = collections.Counter(e["event_id"] for e in got)
        dups = [k for k, e in enumerate(produced) if counts[e.event_id] > 1]
        assert len(counts) == total and set(counts.values()) == {1}, dups
        assert [e["event_id"] for e in got] == [e.event_id for e in produced]
        for camera in ("door", "garden"):
            seqs = [e["seq"] for e in got if e["camera"] == camera]
            assert seqs == list(range(1, len(seqs) + 1))
        assert publisher.spool_depth == 0
        assert metrics.mqtt_connected._value.get() == 1
        assert metrics.events_dropped.labels("too_old")._value.get() == 0
        assert sum(metrics.events_published.labels(t)._value.get() for t in TYPES) == total
    finally:
        publisher.stop(2.0)
        sub.close()
        broker.stop()

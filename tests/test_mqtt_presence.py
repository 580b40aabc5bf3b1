"""Presence state machine and topic naming (pure units, no broker)."""

from __future__ import annotations

import pytest

from streamd.sinks.presence import AWAY, HOME, PresenceTracker
from streamd.sinks.topics import Topics, object_id, topic_level


def test_home_until_unseen_for_away_after_then_away() -> None:
    # given a tracker turning people away after 60 s
    tracker = PresenceTracker(60.0)

    # when alice is seen at t=100 and again at t=130 on another camera
    first = tracker.seen("alice", "door", 100.0)
    second = tracker.seen("alice", "garden", 130.0)

    # then she is home until 190, and away from then on, reported once
    assert first is not None and (first.state, first.expires_at) == (HOME, 160.0)
    assert second is not None and (second.camera, second.expires_at) == ("garden", 190.0)
    assert tracker.next_expiry() == 190.0
    assert tracker.expire(189.9) == []
    gone = tracker.expire(190.0)
    assert [(p.label, p.state, p.camera, p.last_seen, p.expires_at) for p in gone] == [
        ("alice", AWAY, "garden", 130.0, None)
    ]
    assert tracker.expire(500.0) == []
    assert tracker.next_expiry() is None


def test_a_late_sighting_does_not_move_last_seen_back() -> None:
    # given alice seen at t=200
    tracker = PresenceTracker(60.0)
    tracker.seen("alice", "door", 200.0)

    # when an older sighting arrives
    result = tracker.seen("alice", "garden", 150.0)

    # then nothing changes
    assert result is None
    assert tracker.get("alice").last_seen == 200.0


def test_state_round_trip_skips_malformed_entries() -> None:
    # given a saved state with one good and two malformed entries
    tracker = PresenceTracker(60.0)
    tracker.seen("alice", "door", 100.0)
    saved = tracker.to_state() + [{"label": "bob"}, "junk"]

    # when it is loaded into a new tracker
    restored = PresenceTracker(60.0)
    restored.load_state(saved)

    # then alice is back as she was and the rest is ignored
    assert [p.to_dict() for p in restored.all()] == tracker.to_state()


@pytest.mark.parametrize(
    ("name", "level", "oid"),
    [
        ("front_door", "front_door", "front_door"),
        ("Front Door", "Front Door", "Front_Door"),
        ("a/b", "a_b", "a_b"),
        ("x+#y", "x__y", "x__y"),
    ],
)
def test_names_become_safe_topic_levels_and_object_ids(name: str, level: str, oid: str) -> None:
    assert topic_level(name) == level
    assert object_id(name) == oid


def test_empty_name_is_refused_in_a_topic() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        topic_level("")


def test_topics_under_prefix() -> None:
    topics = Topics("home/streamd")
    assert topics.available == "home/streamd/available"
    assert topics.camera_events("door") == "home/streamd/door/events"
    assert topics.snapshot("door", "alice") == "home/streamd/door/person/alice/snapshot"
    assert topics.presence("alice") == "home/streamd/presence/alice"
    assert topics.discovery("sensor", "door_last_person") == "homeassistant/sensor/home_streamd/door_last_person/config"

"""Home Assistant MQTT discovery configs (retained, under ``<discovery_prefix>/<component>/<node>/<object>/config``).

- one device for the daemon, holding a presence ``binary_sensor`` per enrolled person
  (``device_class: presence``, on = ``home``);
- one device per camera (``via_device`` the daemon), holding a ``sensor`` with the last person
  identified there and a ``sensor`` with the camera's stream state.

Every entity's availability is ``<prefix>/available`` (online/offline, our last will).

The last-person sensor reads the non-retained ``<prefix>/<camera>/events`` topic: only
``identified``/``update`` events with a name change it, other events keep its state. Automations
that act on a name (a door) should trigger on the event topic and check ``decided_at``, not on this
sensor's state: Home Assistant restores an entity's last state when its availability returns, and a
state trigger without ``not_from: unavailable`` fires again then (skrashevich/double-take issue 281).
"""

from __future__ import annotations

from typing import Any

from streamd import __version__
from streamd.sinks.topics import Topics, object_id

LAST_PERSON_TEMPLATE = (
    "{{ value_json.label if value_json.type in ['identified', 'update'] and value_json.label else this.state }}"
)


def _common(topics: Topics) -> dict[str, Any]:
    return {
        "availability_topic": topics.available,
        "payload_available": "online",
        "payload_not_available": "offline",
        "origin": {"name": "streamd", "sw_version": __version__},
    }


def daemon_device(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [topics.node_id],
        "name": topics.prefix,
        "manufacturer": "streamd",
        "model": "face recognition daemon",
        "sw_version": __version__,
    }


def camera_device(topics: Topics, camera: str) -> dict[str, Any]:
    return {
        "identifiers": [f"{topics.node_id}_{object_id(camera)}"],
        "name": camera,
        "manufacturer": "streamd",
        "model": "camera",
        "via_device": topics.node_id,
    }


def camera_configs(topics: Topics, camera: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for one camera's entities."""
    cam = object_id(camera)
    device = camera_device(topics, camera)
    last_person = {
        "name": "Last person",
        "unique_id": f"{topics.node_id}_{cam}_last_person",
        "state_topic": topics.camera_events(camera),
        "value_template": LAST_PERSON_TEMPLATE,
        "icon": "mdi:face-recognition",
        "device": device,
        **_common(topics),
    }
    status = {
        "name": "Stream",
        "unique_id": f"{topics.node_id}_{cam}_status",
        "state_topic": topics.camera_status(camera),
        "value_template": "{{ value_json.state }}",
        "json_attributes_topic": topics.camera_status(camera),
        "entity_category": "diagnostic",
        "icon": "mdi:cctv",
        "device": device,
        **_common(topics),
    }
    return [
        (topics.discovery("sensor", f"{cam}_last_person"), last_person),
        (topics.discovery("sensor", f"{cam}_status"), status),
    ]


def person_configs(topics: Topics, label: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for one enrolled person's presence binary_sensor."""
    person = object_id(label)
    config = {
        "name": f"{label} presence",
        "unique_id": f"{topics.node_id}_presence_{person}",
        "state_topic": topics.presence(label),
        "value_template": "{{ value_json.state }}",
        "payload_on": "home",
        "payload_off": "away",
        "device_class": "presence",
        "json_attributes_topic": topics.presence(label),
        "device": daemon_device(topics),
        **_common(topics),
    }
    return [(topics.discovery("binary_sensor", f"presence_{person}"), config)]

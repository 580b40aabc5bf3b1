"""Topic names under the configured prefix, and safe topic levels from camera names and labels.

A camera name or a label becomes one topic level: '/', '+', '#' and NUL would change the topic's
shape or make it invalid, so they become '_'. Home Assistant object ids allow [a-zA-Z0-9_-] only.
"""

from __future__ import annotations

import re

_NOT_IN_LEVEL = re.compile(r"[/+#\x00]")
_NOT_IN_OBJECT_ID = re.compile(r"[^a-zA-Z0-9_-]")


def topic_level(name: str) -> str:
    """``name`` as one topic level (never empty)."""
    level = _NOT_IN_LEVEL.sub("_", name)
    if not level:
        raise ValueError("a camera name or label used in a topic must not be empty")
    return level


def object_id(name: str) -> str:
    """``name`` as a Home Assistant object id / unique-id part."""
    return _NOT_IN_OBJECT_ID.sub("_", name) or "_"


class Topics:
    """Every topic streamd publishes, under ``prefix``."""

    def __init__(self, prefix: str, discovery_prefix: str = "homeassistant") -> None:
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        #: Home Assistant node id: one per daemon (two daemons on one broker use two prefixes).
        self.node_id = object_id(prefix)

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def index_state(self) -> str:
        return f"{self.prefix}/index/state"

    def camera_events(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/events"

    def camera_status(self, camera: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/status"

    def snapshot(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{topic_level(camera)}/person/{topic_level(label)}/snapshot"

    def presence(self, label: str) -> str:
        return f"{self.prefix}/presence/{topic_level(label)}"

    def discovery(self, component: str, object_name: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id(object_name)}/config"

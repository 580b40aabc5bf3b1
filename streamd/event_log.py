"""An event sink that logs every track event (logger ``streamd.events``, debug level).

Off by default (the daemon logs at info); turn it on with ``log.levels: {streamd.events: debug}``
to follow decisions in the journal, e.g. while tuning thresholds::

    level=debug logger=streamd.events msg="identified door/3: Alex_Lacamoire" camera=door event_id=... score=0.71

Each line carries the event's id, so a line can be matched with the MQTT message of the same event.
"""

from __future__ import annotations

import logging

from streamd.types import IdentityEvent

log = logging.getLogger("streamd.events")


def log_event(event: IdentityEvent) -> None:
    """Log ``event`` at debug level (cheap when debug is off: one level check)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    log.debug(
        "%s %s/%d: %s",
        event.type,
        event.camera,
        event.track_id,
        event.label or "unknown",
        extra={
            "camera": event.camera,
            "event_id": event.event_id,
            "event": event.type,
            "track_id": event.track_id,
            "label": event.label,
            "score": round(event.score, 3),
            # Decisions are few; a burst of tracks must not hide one, whatever the rate limit says.
            "ratelimit": False,
        },
    )

"""Per-person presence: ``home`` while seen recently by any camera, ``away`` after ``away_after_s`` unseen.

A pure state machine with explicit times (no clock, no thread): the publisher feeds it sightings
and asks it what expired. Its state is saved beside the spool so a restart neither forgets who is
home nor flips everyone to away (which would fire "left home" automations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

HOME = "home"
AWAY = "away"


@dataclass(frozen=True)
class Presence:
    """One person's presence, as published on ``<prefix>/presence/<label>`` (schemas/presence.json)."""

    label: str
    state: str
    camera: str | None
    last_seen: float | None
    expires_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PresenceTracker:
    """Who is home, from sightings ``seen(label, camera, at)`` and the passing of time ``expire(now)``."""

    def __init__(self, away_after_s: float) -> None:
        if away_after_s <= 0:
            raise ValueError(f"away_after_s must be > 0, got {away_after_s}")
        self.away_after_s = float(away_after_s)
        self._people: dict[str, Presence] = {}

    def seen(self, label: str, camera: str, at: float) -> Presence | None:
        """Record a sighting; returns the new presence to publish, or None for an older sighting."""
        current = self._people.get(label)
        if current is not None and current.last_seen is not None and at < current.last_seen:
            return None  # an event that arrived late must not move last_seen backwards
        presence = Presence(label, HOME, camera, at, at + self.away_after_s)
        self._people[label] = presence
        return presence

    def expire(self, now: float) -> list[Presence]:
        """People whose time ran out, now turned away (each returned once)."""
        gone = []
        for label, p in self._people.items():
            if p.state == HOME and p.expires_at is not None and p.expires_at <= now:
                gone.append(Presence(label, AWAY, p.camera, p.last_seen, None))
        for p in gone:
            self._people[p.label] = p
        return gone

    def next_expiry(self) -> float | None:
        """The earliest time someone turns away, or None when nobody is home."""
        times = [p.expires_at for p in self._people.values() if p.state == HOME and p.expires_at is not None]
        return min(times) if times else None

    def get(self, label: str) -> Presence | None:
        return self._people.get(label)

    def forget(self, label: str) -> None:
        """Drop a person (no longer enrolled)."""
        self._people.pop(label, None)

    def all(self) -> list[Presence]:
        return list(self._people.values())

    def to_state(self) -> list[dict[str, Any]]:
        """A JSON-able state for saving."""
        return [p.to_dict() for p in self._people.values()]

    def load_state(self, items: Iterable[dict[str, Any]]) -> None:
        """Restore a saved state; malformed entries are skipped (the file is a cache, not a source of truth)."""
        for item in items:
            try:
                p = Presence(
                    label=str(item["label"]),
                    state=HOME if item["state"] == HOME else AWAY,
                    camera=item.get("camera"),
                    last_seen=None if item.get("last_seen") is None else float(item["last_seen"]),
                    expires_at=None if item.get("expires_at") is None else float(item["expires_at"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            self._people[p.label] = p

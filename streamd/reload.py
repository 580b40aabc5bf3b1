"""SIGHUP: re-read the config file and apply what can change without a restart.

The new file is loaded and validated like at start (``load_settings``: YAML, ``STREAMD_*``
overrides, every model). If that fails, the errors are logged (one line per problem, naming
the key) and the running configuration stays as it is. If it loads:

- ``cameras``: added cameras start, removed ones stop, changed ones restart; the others keep
  running untouched (their connections, trackers and open tracks survive);
- ``log``: level, format and rate limit change at once;
- any other section that changed (engine, index, mqtt, http, ...) is reported as needing a
  restart and keeps its running value; it is reported again on every reload until restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from streamd.errors import ConfigError
from streamd.settings import Settings, load_settings
from streamd.sources.config import CameraSettings

log = logging.getLogger(__name__)

#: Top-level sections applied without a restart.
LIVE_SECTIONS = ("cameras", "log")


@dataclass(frozen=True)
class CameraDiff:
    """Camera names by what a reload does to them, each tuple in config order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing is to start, stop or restart."""
        return not (self.added or self.removed or self.changed)

    def describe(self) -> str:
        """``added: a; removed: b; changed: c`` (or ``no camera changes``)."""
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if names]
        return "; ".join(parts) or "no camera changes"


def diff_cameras(old: Sequence[CameraSettings], new: Sequence[CameraSettings]) -> CameraDiff:
    """How to go from the ``old`` camera list to the ``new`` one, by camera name.

    A camera is changed when any of its settings differ (URL, sampling, zones, ``enabled``...).
    """
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    return CameraDiff(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and before[n].model_dump() != after[n].model_dump()),
        unchanged=tuple(n for n in after if n in before and before[n].model_dump() == after[n].model_dump()),
    )


def changed_sections(old: Settings, new: Settings) -> list[str]:
    """Top-level settings sections whose values differ (secrets compared by value)."""
    out = []
    for name in type(new).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        if _plain(a) != _plain(b):
            out.append(name)
    return out


def _plain(value: Any) -> Any:
    # model_dump() keeps SecretStr objects, which compare by value; lists of models dump too.
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class CameraApplier(Protocol):
    """What the reloader needs of the running daemon (``streamd.app.App`` provides it)."""

    def apply_cameras(self, cameras: Sequence[CameraSettings]) -> CameraDiff:
        """Start added cameras, stop removed ones, restart changed ones; leave the rest running."""
        ...


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did. ``ok`` is False when the new config was refused (``error`` says why)."""

    ok: bool
    error: str | None = None
    cameras: CameraDiff = field(default_factory=CameraDiff)
    applied: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()


class ConfigReloader:
    """Re-reads ``path`` on :meth:`reload` and applies it to ``app`` (see the module docstring).

    ``on_log_settings`` receives a changed ``log:`` section (``LoggingSetup.apply``);
    ``on_secrets`` receives the new config's secrets so the log redactor knows them before
    anything about the new cameras is logged.
    """

    def __init__(
        self,
        path: Path | str,
        current: Settings,
        app: CameraApplier,
        *,
        on_log_settings: Callable[[Any], None] | None = None,
        on_secrets: Callable[[Settings], None] | None = None,
        load: Callable[[Path], Settings] = load_settings,
    ) -> None:
        self.path = Path(path)
        self.current = current
        self.app = app
        self.on_log_settings = on_log_settings
        self.on_secrets = on_secrets
        self._load = load

    def reload(self) -> ReloadResult:
        """Load, validate and apply the config file; never raises for a bad file."""
        try:
            new = self._load(self.path)
        except ConfigError as exc:
            problems = str(exc).splitlines()
            for line in problems:
                log.error("reload refused, the running configuration stays: %s", line)
            return ReloadResult(ok=False, error=str(exc))
        if self.on_secrets is not None:
            self.on_secrets(new)
        sections = changed_sections(self.current, new)
        applied: list[str] = []
        if "log" in sections and self.on_log_settings is not None:
            self.on_log_settings(getattr(new, "log"))
            applied.append("log")
        diff = diff_cameras(self.current.cameras, new.cameras)
        if not diff.empty:
            diff = self.app.apply_cameras(new.cameras)
            applied.append("cameras")
        restart = tuple(s for s in sections if s not in LIVE_SECTIONS)
        # What now runs: the new live sections on top of the running values of the others.
        self.current = self.current.model_copy(update={name: getattr(new, name) for name in LIVE_SECTIONS
                                                        if name in type(new).model_fields})
        if restart:
            log.warning(
                "reload: changes to %s need a restart (systemctl restart streamd); they keep their running values",
                ", ".join(restart),
            )
        log.info("reload done: %s", diff.describe())
        return ReloadResult(ok=True, cameras=diff, applied=tuple(applied), restart_needed=restart)

"""The daemon's logging: the ``log:`` settings section and :func:`setup_logging`.

One handler on the root logger writes structured lines (``logfmt`` or JSON, see
:mod:`streamd.log_format`) to stderr, through the filters of :mod:`streamd.log_filters`:
per-camera context, a rate limit on repeats, and secret redaction as the last step.

Under systemd, stderr is the journal. systemd says so in ``$JOURNAL_STREAM`` (the device and
inode of the stream it connected); when it matches stderr, lines lose their time stamp (the
journal has its own; two would be doubled in ``journalctl``) and gain a ``<N>`` syslog
priority prefix, which journald turns into the entry's priority (``journalctl -p warning``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamd.log_filters import ContextFilter, RateLimitFilter, SecretRedactor
from streamd.log_format import JsonFormatter, LogfmtFormatter, StructuredFormatter

if TYPE_CHECKING:
    from streamd.settings import Settings

LevelName = Literal["debug", "info", "warning", "error", "critical"]


class RateLimitSettings(BaseModel):
    """How often the same message may repeat before repeats are counted instead of logged."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    interval_s: float = Field(
        10.0,
        ge=0,
        le=86400,
        description="Length of a rate-limit window (0 = no rate limit). Longer windows keep the journal "
        "quieter when a camera keeps failing, but hide more of a burst.",
    )
    burst: int = Field(
        5,
        ge=1,
        le=10000,
        description="Lines of one kind (same logger, level, message and camera) let through per window; the "
        "next one after the window says how many were suppressed (suppressed=N).",
    )


class LogSettings(BaseModel):
    """Log level, line format and journald integration (``log:`` in the config file)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    level: LevelName = Field(
        "info", description="Lowest level logged. debug is verbose (every reconnect attempt, every reload step)."
    )
    format: Literal["logfmt", "json"] = Field(
        "logfmt",
        description="logfmt: key=value lines, readable in journalctl and parsed by Loki/Grafana; json: one "
        "JSON object per line, for log shippers.",
    )
    journald: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Journald mode: no time stamp (the journal adds its own) and a <N> priority prefix per "
        "line. auto = on when stderr is connected to the journal ($JOURNAL_STREAM).",
    )
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    levels: dict[str, LevelName] = Field(
        default_factory=lambda: {"uvicorn.access": "warning"},
        description="Levels of single loggers, e.g. {streamd.sources: debug, paho: warning}. The default "
        "keeps one line per HTTP request (uvicorn.access) out of the log.",
    )


def stream_is_journal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd named in ``$JOURNAL_STREAM`` (``dev:inode``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        # Unset or malformed variable, or a stream without a file descriptor (a test buffer).
        return False
    return stat.st_dev == dev and stat.st_ino == ino


def secrets_from_settings(settings: Settings) -> list[str]:
    """The secrets a config holds or points to (MQTT password, HTTP token, camera URL passwords).

    Read now, for the redactor. A secret that cannot be read is skipped: reporting that is the
    job of the component that needs it, with its own error.
    """
    from streamd.errors import ConfigError
    from streamd.sources.redact import secrets_of

    found: list[str] = []
    for resolve in (settings.mqtt.resolve_password, settings.http.resolve_token):
        try:
            secret = resolve()
        except ConfigError:
            continue
        if secret:
            found.append(secret)
    for camera in settings.cameras:
        found.extend(secrets_of(camera.url))
    return found


class _Handler(logging.StreamHandler):
    """streamd's root handler (a subclass, so that setup can find and replace its own)."""


@dataclass
class LoggingSetup:
    """The installed handler and its parts; :meth:`apply` changes them in place (on SIGHUP)."""

    handler: logging.Handler
    redactor: SecretRedactor
    rate_limit: RateLimitFilter
    journald: bool
    environ: Mapping[str, str] | None = None
    level_override: int | None = None
    _levels: dict[str, int] = field(default_factory=dict)

    def add_secrets(self, *secrets: str | None) -> None:
        """Mask these literal values in every line from now on."""
        self.redactor.add(*secrets)

    def apply(self, settings: LogSettings) -> None:
        """Apply ``settings`` (level, format, journald mode, rate limit, logger levels) to the live handler."""
        stream = getattr(self.handler, "stream", None)
        if settings.journald == "auto":
            self.journald = stream is not None and stream_is_journal(stream, self.environ)
        else:
            self.journald = settings.journald == "on"
        formatter_cls: type[StructuredFormatter] = JsonFormatter if settings.format == "json" else LogfmtFormatter
        self.handler.setFormatter(
            formatter_cls(timestamps=not self.journald, priority_prefix=self.journald, redact=self.redactor)
        )
        self.rate_limit.interval_s = settings.rate_limit.interval_s
        self.rate_limit.burst = settings.rate_limit.burst
        level = self.level_override if self.level_override is not None else logging.getLevelName(settings.level.upper())
        logging.getLogger().setLevel(level)
        for name in self._levels:  # loggers the previous settings named go back to inheriting
            logging.getLogger(name).setLevel(logging.NOTSET)
        self._levels = {name: logging.getLevelName(lvl.upper()) for name, lvl in settings.levels.items()}
        for name, lvl in self._levels.items():
            logging.getLogger(name).setLevel(lvl)


def setup_logging(
    settings: LogSettings | None = None,
    *,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    level: int | None = None,
) -> LoggingSetup:
    """Install streamd's handler on the root logger (replacing a previous one) and answer it.

    ``stream`` defaults to stderr; ``environ`` to ``os.environ`` (journald detection);
    ``secrets`` are masked literally; ``level`` (e.g. from ``-v``) overrides ``settings.level``.
    Handlers that others installed on the root logger (pytest's capture) stay; a plain
    ``logging.basicConfig`` handler is replaced.
    """
    settings = settings or LogSettings()
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) in (_Handler, logging.StreamHandler):
            root.removeHandler(old)
            if isinstance(old, _Handler):
                old.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    rate_limit = RateLimitFilter(settings.rate_limit.interval_s, settings.rate_limit.burst)
    handler.addFilter(ContextFilter())
    handler.addFilter(rate_limit)
    setup = LoggingSetup(
        handler=handler,
        redactor=SecretRedactor(secrets),
        rate_limit=rate_limit,
        journald=False,
        environ=environ,
        level_override=level,
    )
    setup.apply(settings)
    root.addHandler(handler)
    logging.captureWarnings(True)
    _log_thread_crashes()
    return setup


def _log_thread_crashes() -> None:
    # An exception that kills a thread would go to stderr as a bare multi-line traceback (one
    # journal entry per line, no redaction); log it as one structured, redacted record instead.
    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        logging.getLogger("streamd").critical(
            "thread %s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)  # type: ignore[arg-type]
        )

    threading.excepthook = hook

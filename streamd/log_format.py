"""Structured log lines: ``logfmt`` (key=value) or one JSON object per line.

Every line carries ``level``, ``logger`` and ``msg``, then any context fields (``camera``...)
and ``extra=`` fields of the call, then ``exc`` with the traceback escaped onto the same line
(a multi-line traceback would become several journal entries). Under journald the time stamp
is left out (the journal stamps each entry itself) and the line starts with the syslog
priority ``<N>`` that journald turns into the entry's PRIORITY. The finished line goes through
``redact`` last, so a secret never leaves the process whatever field carried it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` or a filter.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

#: Attributes that steer the handler's filters (``extra={"ratelimit": False}``), not content.
_CONTROL_ATTRS = frozenset({"ratelimit"})

#: Python levels to syslog priorities (what journald reads from a ``<N>`` prefix).
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

_LEVEL_NAMES = {
    logging.CRITICAL: "critical",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python level (between the named levels, the more severe one)."""
    for level in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return _SYSLOG_PRIORITY[level]
    return 7


def level_name(levelno: int) -> str:
    """Lower-case level name (``warning``), or ``level<N>`` for custom levels."""
    return _LEVEL_NAMES.get(levelno) or f"level{levelno}"


def iso_utc(created: float) -> str:
    """``2025-01-31T12:00:00.123Z`` (UTC, milliseconds): sortable and unambiguous across zones."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def _logfmt_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class StructuredFormatter(logging.Formatter):
    """Base of the two formats: collects the fields of a record, renders them, redacts the line.

    ``timestamps`` adds a ``ts`` field; ``priority_prefix`` starts each line with ``<N>``;
    ``redact`` is applied to the finished line (identity when None).
    """

    def __init__(
        self,
        *,
        timestamps: bool = True,
        priority_prefix: bool = False,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.priority_prefix = priority_prefix
        self.redact = redact or (lambda text: text)

    def fields(self, record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs of a record in output order."""
        if self.timestamps:
            yield "ts", iso_utc(record.created)
        yield "level", level_name(record.levelno)
        yield "logger", record.name
        if record.threadName and record.threadName != "MainThread":
            yield "thread", record.threadName
        yield "msg", record.getMessage()
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in _CONTROL_ATTRS and not key.startswith("_") and value is not None:
                yield key, value
        if record.exc_info:
            yield "exc", self.formatException(record.exc_info)
        elif record.exc_text:
            yield "exc", record.exc_text
        if record.stack_info:
            yield "stack", self.formatStack(record.stack_info)

    def render(self, fields: list[tuple[str, Any]]) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        line = self.redact(self.render(list(self.fields(record))))
        if self.priority_prefix:
            line = f"<{syslog_priority(record.levelno)}>{line}"
        return line


class LogfmtFormatter(StructuredFormatter):
    """``ts=... level=info logger=streamd.sources camera=door msg="camera up"`` (logfmt)."""

    def render(self, fields: list[tuple[str, Any]]) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields)


class JsonFormatter(StructuredFormatter):
    """One JSON object per line (for log shippers: Loki, Vector, Elasticsearch...)."""

    def render(self, fields: list[tuple[str, Any]]) -> str:
        return json.dumps(dict(fields), ensure_ascii=False, default=str)

"""What happens to a log record between the call and the line: context, rate limit, redaction.

- :class:`ContextFilter` adds the fields of :func:`log_context` (``camera=...``) to each record.
- :class:`RateLimitFilter` lets a burst of the same message through per window and drops the
  rest, then says how many it dropped (``suppressed=N``) on the next one let through, so a
  camera that fails every 100 ms logs a few lines per window instead of ten a second.
- :class:`SecretRedactor` masks secrets in the finished line: the known ones (the MQTT password,
  the HTTP token, camera passwords) wherever they appear, plus anything shaped like a URL
  password, a bearer token or a ``password=`` assignment. It is the last line of defence:
  code should not log secrets in the first place.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from streamd.sources.redact import MASK, redact_text

_context: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("streamd_log_context", default={})


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (in this thread or task).

    A camera thread wraps its work in ``with log_context(camera=name):`` and every line it logs,
    from any module, carries ``camera=name``. New threads start with an empty context: set it in
    the thread's target (or start the thread with ``contextvars.copy_context().run``).
    """
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def with_log_context(fn: Callable[[], object], **fields: object) -> Callable[[], None]:
    """``fn`` wrapped to run inside ``log_context(**fields)``: a thread target whose lines carry the fields.

    ``threading.Thread(target=with_log_context(self._run, camera=name))``.
    """

    def run() -> None:
        with log_context(**fields):
            fn()

    return run


def current_context() -> dict[str, object]:
    """The fields :func:`log_context` set in this thread or task."""
    return dict(_context.get())


def camera_logger(logger: logging.Logger, camera: str) -> logging.LoggerAdapter:
    """A logger whose records carry ``camera=<camera>`` (for code that serves several cameras)."""
    return logging.LoggerAdapter(logger, {"camera": camera})


class ContextFilter(logging.Filter):
    """Copies the :func:`log_context` fields onto each record (fields set by ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


@dataclass
class _Window:
    start: float
    passed: int = 1
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """Lets at most ``burst`` records of one kind through per ``interval_s``; counts the rest.

    A kind is (logger, level, message template, camera): the same failure of two cameras is two
    kinds, while one camera's messages differing only in their arguments are one. The first
    record of a kind let through after suppression carries ``suppressed=N``. CRITICAL records and
    records logged with ``extra={"ratelimit": False}`` always pass; ``interval_s <= 0`` turns
    the filter off. At most ``max_kinds`` kinds are remembered (least recently seen forgotten).
    """

    def __init__(
        self,
        interval_s: float = 10.0,
        burst: int = 5,
        *,
        max_kinds: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.burst = max(1, burst)
        self.max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[tuple[object, ...], _Window] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval_s <= 0 or record.levelno >= logging.CRITICAL or getattr(record, "ratelimit", True) is False:
            return True
        key = (record.name, record.levelno, str(record.msg), getattr(record, "camera", None))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval_s:
                carried = window.suppressed if window is not None else 0
                self._windows[key] = _Window(start=now)
                self._windows.move_to_end(key)
                while len(self._windows) > self.max_kinds:
                    self._windows.popitem(last=False)
                if carried:
                    record.suppressed = carried
                return True
            self._windows.move_to_end(key)
            if window.passed < self.burst:
                window.passed += 1
                return True
            window.suppressed += 1
            return False

    def pending(self) -> int:
        """Records suppressed and not yet reported (for tests and the shutdown summary)."""
        with self._lock:
            return sum(w.suppressed for w in self._windows.values())


# Bearer/Basic credentials in an Authorization header or anywhere else.
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
_SECRET_KEYS = r"password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api_?key|apikey"
# password=xyz, token=xyz (logfmt, query strings, command lines)...
_ASSIGNMENT = re.compile(rf"(?i)(?<!\w)((?:{_SECRET_KEYS})=)(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s&,;\"'}}]+)")
# ... and "password": "xyz" / 'token': 'xyz' (JSON, Python reprs). A bare `token: x` is left alone:
# config errors read like "http.token: the token is empty".
_QUOTED_KEY = re.compile(rf"(?i)(([\"'])(?:{_SECRET_KEYS})\2\s*:\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*')")


class SecretRedactor:
    """Masks secrets in text; callable, so it plugs into the formatters as ``redact=``.

    Known secrets (``add``) shorter than 4 characters are not masked literally (every "abc" in
    every line would go); their shapes (URL passwords, assignments) are still masked.
    """

    MIN_LITERAL = 4

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Remember literal secrets to mask wherever they appear."""
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if s and len(s) >= self.MIN_LITERAL}
            # Longest first, so a secret containing another one is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = redact_text(text)
        text = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        text = _ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)
        return _QUOTED_KEY.sub(lambda m: m.group(1) + m.group(2) + MASK + m.group(2), text)

"""Keeping camera passwords out of logs, errors, metrics and events.

Camera URLs often carry credentials (``rtsp://admin:secret@10.0.0.5/stream1``) and FFmpeg echoes
the URL it failed on in its error strings (``Invalid data found when processing input:
'rtsp://admin:secret@...'``). Everything streamd says about a camera goes through
:func:`redact_url` (a URL it holds) or :func:`redact_text` (any free text, e.g. an exception
message), which replace the password, and secret query parameters, with ``***``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

# Query parameters that carry a secret in camera and NVR URLs (Hikvision, Dahua, Reolink, go2rtc...).
_SECRET_PARAMS = ("password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "secret", "sig")

# scheme://user:password@  (like FFmpeg, the password ends at the last '@' before the first '/',
# so an unescaped '@' inside it is still masked).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s'\"/]*)@")
_PARAM = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(_SECRET_PARAMS) + r")=)(?P<value>[^&\s'\"#]*)", re.IGNORECASE
)


def redact_url(url: str | None) -> str:
    """The URL with its password (and secret query parameters) replaced by ``***``.

    The user name, host, port and path stay, so a message still says which camera it is about:
    ``rtsp://admin:secret@cam:554/live`` -> ``rtsp://admin:***@cam:554/live``. Device paths and
    other non-URL strings come back unchanged.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None and not _PARAM.search(url):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    redacted = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return _PARAM.sub(lambda m: m.group("head") + MASK, redacted)


def secrets_of(url: str | None) -> tuple[str, ...]:
    """The secret strings in ``url`` (password, secret query values), raw and percent-decoded."""
    if not url:
        return ()
    found: set[str] = set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.update({password, unquote(password)})
    for m in _PARAM.finditer(url):
        if m.group("value"):
            found.update({m.group("value"), unquote(m.group("value"))})
    # Longest first so that a secret containing another one is masked whole.
    return tuple(sorted((s for s in found if len(s) >= 3), key=len, reverse=True))


def redact_text(text: object, url: str | None = None) -> str:
    """``str(text)`` with every URL password and secret parameter masked.

    Pass the camera ``url`` too when you have it: its password is then masked wherever it
    appears literally, even where FFmpeg printed it outside a URL or with odd characters.
    """
    out = str(text)
    for secret in secrets_of(url):
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: m.group("head") + MASK + "@", out)
    return _PARAM.sub(lambda m: m.group("head") + MASK, out)


class RedactingFilter(logging.Filter):
    """A logging filter that masks URL passwords in every record it sees.

    Attach it to the handlers of the process (``handler.addFilter(RedactingFilter())``) so that
    log lines from libraries, e.g. FFmpeg messages forwarded by PyAV under ``libav.*``, are
    masked as well.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

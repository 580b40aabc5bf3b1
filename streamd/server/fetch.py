"""Turning an API request's ``image`` string into pixels: base64, or a URL on the allow-list.

PaddleX's serving API takes either "the URL of an image file accessible by the server" or the
base64 of the file. Fetching whatever URL a client names lets that client reach the server's
private network (server-side request forgery), so a URL is fetched only when it matches
``http.allowed_url_prefixes``, every redirect target is checked again, the body is read up
to ``http.max_download_bytes`` and no proxy or .netrc credentials from the environment are used.
The check and the fetch use the same URL parser (httpx's), so they cannot disagree on the host.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from urllib.parse import unquote

import httpx
import numpy as np

from streamd.errors import ImageError
from streamd.images import decode_image
from streamd.server.config import HttpSettings
from streamd.server.envelope import ApiError

_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_url(value: str) -> bool:
    """PaddleX's rule: a string starting with http:// or https:// is a URL, anything else base64."""
    head = value[:8].lower()
    return head.startswith("http://") or head.startswith("https://")


def url_without_secrets(url: httpx.URL | str) -> str:
    """The URL without user info, query or fragment, for API error messages.

    Stricter than :func:`streamd.sources.redact.redact_url` (which keeps the user name and masks
    only known secret parameters): a request's URL is the client's, and its query may carry a
    signed token under any name, so the API echoes none of it.
    """
    u = httpx.URL(str(url)) if not isinstance(url, httpx.URL) else url
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


class UrlAllowList:
    """Matches URLs against prefixes by scheme, host, port and path prefix (not as raw strings,
    so ``http://good.example`` does not allow ``http://good.example.evil.net/``)."""

    def __init__(self, prefixes: list[str]) -> None:
        self._prefixes = [httpx.URL(p) for p in prefixes]

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def allows(self, url: httpx.URL) -> bool:
        if url.scheme not in _DEFAULT_PORTS or not url.host or url.userinfo:
            return False
        # A ".." segment (also percent-encoded) could climb out of an allowed path on the server.
        if any(segment == ".." for segment in unquote(url.path).split("/")):
            return False
        return any(self._match(prefix, url) for prefix in self._prefixes)

    @staticmethod
    def _match(prefix: httpx.URL, url: httpx.URL) -> bool:
        if prefix.scheme != url.scheme or prefix.host.lower() != url.host.lower():
            return False
        if (prefix.port or _DEFAULT_PORTS[prefix.scheme]) != (url.port or _DEFAULT_PORTS[url.scheme]):
            return False
        base = prefix.path
        if base in ("", "/") or base.endswith("/"):
            return url.path.startswith(base or "/")
        return url.path == base or url.path.startswith(base + "/")


class ImageLoader:
    """Loads request images under the limits of ``HttpSettings``; every failure is an ApiError."""

    def __init__(self, settings: HttpSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.allow_list = UrlAllowList(settings.allowed_url_prefixes)
        self._transport = transport

    def load(self, value: str, *, where: str) -> np.ndarray:
        """BGR uint8 pixels of ``value`` (a URL or base64); ``where`` names the field in errors."""
        data = self.fetch(value, where=where) if is_url(value) else self.decode_base64(value, where=where)
        try:
            return decode_image(data, name=where, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            # decode_image names the engine's setting; the API's cap is its own.
            raise ApiError(422, str(exc).replace("engine.max_image_pixels", "http.max_image_pixels")) from None

    @staticmethod
    def decode_base64(value: str, *, where: str) -> bytes:
        text = _WHITESPACE.sub("", _DATA_URI.sub("", value, count=1))
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, f"{where}: neither an http(s) URL nor valid base64") from None

    def fetch(self, value: str, *, where: str) -> bytes:
        """The body of an allowed URL, following allowed redirects, capped in size and time."""
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ApiError(422, f"{where}: invalid URL ({exc})") from None
        if not self.allow_list:
            raise ApiError(403, f"{where}: image URLs are refused; send base64 or set http.allowed_url_prefixes")
        deadline = time.monotonic() + self.settings.url_timeout_s
        with httpx.Client(
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
            timeout=self.settings.url_timeout_s,
        ) as client:
            for _ in range(self.settings.max_redirects + 1):
                if not self.allow_list.allows(url):
                    raise ApiError(403, f"{where}: URL {url_without_secrets(url)} is not in http.allowed_url_prefixes")
                try:
                    with client.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = url.join(response.headers["location"])
                            continue
                        if response.status_code != 200:
                            raise ApiError(
                                502, f"{where}: fetching {url_without_secrets(url)} gave HTTP {response.status_code}"
                            )
                        return self._read_capped(response, url, where, deadline)
                except httpx.HTTPError as exc:
                    raise ApiError(
                        502, f"{where}: fetching {url_without_secrets(url)} failed ({type(exc).__name__})"
                    ) from None
        raise ApiError(502, f"{where}: more than {self.settings.max_redirects} redirects (http.max_redirects)")

    def _read_capped(self, response: httpx.Response, url: httpx.URL, where: str, deadline: float) -> bytes:
        cap = self.settings.max_download_bytes
        too_large = ApiError(413, f"{where}: {url_without_secrets(url)} is larger than {cap} bytes (http.max_download_bytes)")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise too_large
            if time.monotonic() > deadline:
                raise ApiError(
                    502, f"{where}: fetching {url_without_secrets(url)} took longer than {self.settings.url_timeout_s} s"
                )
            chunks.append(chunk)
        return b"".join(chunks)

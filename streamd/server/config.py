"""Settings of streamd's HTTP server (``http:`` in the config file).

Secure by default: the server binds to loopback; bound anywhere else it refuses to start
without a bearer token; image URLs in API requests are refused unless an allow-list names
them. This module imports pydantic only, so loading settings never pulls in FastAPI.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamd.credentials import credential_path
from streamd.errors import ConfigError

#: Not in /etc/services, and clear of what runs beside a camera daemon: Frigate (5000, 8971),
#: go2rtc (1984), MediaMTX (8554, 8888, 8889, 9997), motionEye (8765), Home Assistant (8123),
#: Grafana (3000), Prometheus (9090) and its exporters (9100-9999), PaddleX serving (8080).
DEFAULT_PORT = 8750

#: A guessable token is no protection; `openssl rand -hex 32` gives 64 characters.
MIN_TOKEN_LENGTH = 16

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names a loopback interface only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpSettings(BaseModel):
    """The one HTTP server: /metrics, health, camera state, recent events, the PaddleX serving API."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run the HTTP server. Off means no /metrics and no API.")
    host: str = Field(
        "127.0.0.1",
        description="Address to bind. The loopback default is reachable from this machine only; "
        "0.0.0.0 or a LAN address exposes the API and then requires a token.",
    )
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="TCP port to listen on.")
    token: SecretStr | None = Field(
        None,
        description="Bearer token clients must send (Authorization: Bearer ...) for everything but "
        "/metrics, /healthz and /readyz. Prefer token_file or token_env: a token in the config file "
        "is readable by anyone who can read the file.",
    )
    token_file: Path | None = Field(
        None,
        description="File whose content (stripped) is the token. A relative path is read from "
        "$CREDENTIALS_DIRECTORY when systemd sets it (LoadCredential=).",
    )
    token_env: str | None = Field(None, description="Name of an environment variable holding the token.")
    require_token: bool | None = Field(
        None,
        description="Require the token even on loopback (true), or decide by host (unset: required "
        "when host is not loopback). false is refused for a non-loopback host.",
    )
    allowed_url_prefixes: list[str] = Field(
        default_factory=list,
        description="Image URLs in API requests must start with one of these (scheme, host, port and "
        "path prefix compared separately). Empty = URLs refused, only base64 images accepted: the "
        "server never fetches what a client names unless you allow it (no request forgery).",
    )
    url_timeout_s: float = Field(10.0, gt=0, le=300, description="Time limit for fetching one image URL.")
    max_redirects: int = Field(
        3, ge=0, le=10, description="Redirects followed when fetching an image URL; each target must be allowed too."
    )
    max_download_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest image fetched from a URL; a larger one is refused."
    )
    max_request_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest request body (base64 images are 4/3 of their size). Larger requests get 413. "
        "Raising it allows bigger gallery batches per request but lets a client hold more memory.",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Images with more pixels than this are refused before decoding (decompression bombs).",
    )
    max_images_per_request: int = Field(
        1000, ge=1, description="Most image-label pairs in one index build or add request."
    )
    max_stored_indexes: int = Field(
        16,
        ge=1,
        description="Indexes built through the API are kept in memory under their indexKey; beyond this "
        "many the least recently used is forgotten.",
    )
    visualize: bool = Field(
        True, description="Return the annotated image from /face-recognition-infer unless the request says."
    )
    allow_index_activation: bool = Field(
        False,
        description="Allow POST /api/index/activate to make an API-built index the daemon's serving index "
        "(written to index.dir). Off = API-built indexes never replace what the cameras use.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (browsers). Empty = CORS off."
    )

    @field_validator("allowed_url_prefixes")
    @classmethod
    def _prefixes_are_urls(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            parts = urlsplit(prefix)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{prefix!r} is not an http(s) URL prefix with a host")
            if parts.username or parts.password:
                raise ValueError(f"{prefix!r} must not contain a user name or password")
            if parts.query or parts.fragment:
                raise ValueError(f"{prefix!r} must not contain a query or fragment")
        return prefixes

    @model_validator(mode="after")
    def _token_rules(self) -> "HttpSettings":
        sources = [name for name in ("token", "token_file", "token_env") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"give one of token, token_file, token_env, not {' and '.join(sources)}")
        loopback = is_loopback_host(self.host)
        if self.require_token is False and not loopback:
            raise ValueError(f"require_token: false is refused for non-loopback host {self.host!r}")
        if self.token_required and not sources:
            why = "require_token is true" if self.require_token else f"host {self.host!r} is not loopback"
            raise ValueError(f"a token is required because {why}: set token_file, token_env or token")
        return self

    @property
    def token_required(self) -> bool:
        """Whether requests (other than /metrics, /healthz, /readyz) must carry the token."""
        if self.require_token is not None:
            return self.require_token
        return not is_loopback_host(self.host)

    def resolve_token(self) -> str | None:
        """The token from wherever it is configured, read now (never at import); None if none is set.

        Raises ConfigError naming the file or variable when it is missing or empty.
        """
        if self.token is not None:
            value = self.token.get_secret_value().strip()
            where = "http.token"
        elif self.token_file is not None:
            path = credential_path(self.token_file)
            where = f"http.token_file {path}"
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read token ({exc.strerror})") from None
        elif self.token_env is not None:
            where = f"http.token_env ${self.token_env}"
            value = os.environ.get(self.token_env, "").strip()
        else:
            return None
        if not value:
            raise ConfigError(f"{where}: the token is empty")
        if len(value) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        return value

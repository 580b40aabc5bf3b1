"""Settings of the MQTT output (``mqtt:`` in the config file).

Only pydantic is imported here, so loading settings never pulls in paho. The password is never
stored in plain text on the model: it is a ``SecretStr``, or read when connecting from a file
(a systemd credential) or an environment variable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamd.credentials import credential_path
from streamd.errors import ConfigError

_WILDCARDS = ("+", "#", "\x00")


def _default_client_id() -> str:
    # A persistent session is keyed by the client id, so it must be stable across restarts
    # and differ between hosts sharing a broker.
    return f"streamd-{socket.gethostname()}"


def _check_topic_prefix(value: str, what: str) -> str:
    if not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{what} {value!r} must be non-empty without a leading or trailing '/'")
    if any(w in value for w in _WILDCARDS):
        raise ValueError(f"{what} {value!r} must not contain the wildcards '+' or '#'")
    return value


class MqttSettings(BaseModel):
    """The MQTT broker connection, topics, delivery guarantees, presence and Home Assistant discovery."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Publish events and state to an MQTT broker.")
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Broker port. Unset = 8883 with TLS, 1883 without."
    )
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1", description="MQTT protocol version: 3.1.1 (every broker) or 5."
    )
    client_id: str = Field(
        default_factory=_default_client_id,
        min_length=1,
        description="Client id; keys the persistent session on the broker, so keep it stable and unique "
        "per daemon. Default: streamd-<hostname>.",
    )
    keepalive_s: int = Field(
        60,
        ge=5,
        le=65535,
        description="Seconds between keep-alive pings. Lower notices a dead connection (and makes the broker "
        "publish our last will) sooner, at the cost of a few bytes per interval.",
    )
    topic_prefix: str = Field("streamd", description="First level of every topic: <prefix>/events, ...")
    username: str | None = Field(None, description="User name; requires one password source below.")
    password: SecretStr | None = Field(
        None,
        description="Password. Prefer password_file or password_env: a password in the config file is "
        "readable by anyone who can read the file.",
    )
    password_file: Path | None = Field(
        None,
        description="File holding the password (one trailing newline is ignored), e.g. a systemd "
        "credential. A relative path is read from $CREDENTIALS_DIRECTORY when systemd sets it.",
    )
    password_env: str | None = Field(None, description="Name of an environment variable holding the password.")
    tls: bool = Field(False, description="Connect over TLS, verifying the broker's certificate.")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the broker's certificate. Unset = the system CAs."
    )
    certfile: Path | None = Field(None, description="PEM client certificate, for brokers that require one.")
    keyfile: Path | None = Field(None, description="PEM key of certfile (unset when certfile holds it too).")
    tls_insecure: bool = Field(
        False,
        description="Do not check that the broker's certificate names the host. The link is still encrypted "
        "but open to impersonation; for test brokers only.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, le=3600, description="First wait before reconnecting; doubled after each failure."
    )
    reconnect_max_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait between reconnect attempts. Lower finds a returning broker sooner but "
        "retries a dead one more often.",
    )
    qos: Literal[0, 1, 2] = Field(
        1,
        description="QoS of events and state. 1 (at least once) is the default: an event is removed from the "
        "spool only after the broker's PUBACK; one in flight when a connection breaks may arrive twice "
        "(dedupe by event_id). 0 gives no delivery guarantee; 2 costs a second round trip per message.",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        description="MQTT 5: how long the broker keeps the session after a disconnect (persistent session). "
        "MQTT 3.1.1 sessions are persistent with no expiry (clean_session false).",
    )
    max_event_age_s: float = Field(
        30.0,
        gt=0,
        description="An identity decision (identified, update) older than this when it could be sent is "
        "dropped and counted (reason too_old), never sent late: a stale name must not open a door after a "
        "broker outage. Lower is safer; higher delivers more decisions after an outage. new and end events "
        "are always delivered from the spool.",
    )
    away_after_s: float = Field(
        300.0,
        gt=0,
        description="A person's presence turns from home to away after this long unseen by every camera. "
        "Lower reacts sooner to leaving but flaps when a face is briefly not recognised.",
    )
    discovery: bool = Field(True, description="Publish Home Assistant MQTT discovery configs.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    spool_dir: Path = Field(
        Path("/var/lib/streamd/spool"),
        description="Directory of the on-disk spool: every event is written here (fsync'd) before it is sent "
        "and removed when the broker acknowledged it, so outages and restarts lose nothing.",
    )
    spool_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=4096,
        description="Most bytes of events kept in the spool; beyond it the oldest are dropped (reason "
        "spool_full). An event is about 500 bytes.",
    )
    spool_max_age_s: float = Field(
        86400.0, gt=0, description="Events older than this in the spool are dropped (reason spool_expired)."
    )
    queue_size: int = Field(
        10000,
        ge=1,
        description="Events waiting for the publisher thread; when full, new events are dropped (reason "
        "queue_full) so that a camera thread never blocks.",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # YAML reads `protocol: 5` as a number.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 5:
            return "5"
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        return _check_topic_prefix(value, "topic_prefix")

    @field_validator("discovery_prefix")
    @classmethod
    def _valid_discovery_prefix(cls, value: str) -> str:
        return _check_topic_prefix(value, "discovery_prefix")

    @model_validator(mode="after")
    def _consistent(self) -> "MqttSettings":
        sources = self.password_sources
        if len(sources) > 1:
            raise ValueError(f"give one of password, password_file, password_env, not {' and '.join(sources)}")
        if self.username and not sources:
            raise ValueError("username is set without a password: set password_file, password_env or password")
        if sources and not self.username:
            raise ValueError(f"{sources[0]} is set without a username")
        if not self.tls:
            tls_only = [n for n in ("ca_file", "certfile", "keyfile") if getattr(self, n) is not None]
            if self.tls_insecure:
                tls_only.append("tls_insecure")
            if tls_only:
                raise ValueError(f"{', '.join(tls_only)} need tls: true")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile is set without certfile")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) is above reconnect_max_s ({self.reconnect_max_s})"
            )
        return self

    @property
    def password_sources(self) -> list[str]:
        """The password fields that are set (at most one is valid)."""
        return [n for n in ("password", "password_file", "password_env") if getattr(self, n) is not None]

    @property
    def effective_port(self) -> int:
        """The configured port, or the protocol default (8883 with TLS, 1883 without)."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    def resolve_password(self) -> str | None:
        """The password from wherever it is configured, read now (never at import); None without one.

        Raises ConfigError naming the file or variable (never the password) when it is missing or empty.
        """
        if self.password is not None:
            value, where = self.password.get_secret_value(), "mqtt.password"
        elif self.password_file is not None:
            path = credential_path(self.password_file)
            where = f"mqtt.password_file {path}"
            try:
                value = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read the password ({exc.strerror})") from None
            # A file written by `echo` or an editor ends with a newline that is not part of it.
            value = value[:-1] if value.endswith("\n") else value
            value = value[:-1] if value.endswith("\r") else value
        elif self.password_env is not None:
            where = f"mqtt.password_env ${self.password_env}"
            if self.password_env not in os.environ:
                raise ConfigError(f"{where}: the environment variable is not set")
            value = os.environ[self.password_env]
        else:
            return None
        if not value:
            raise ConfigError(f"{where}: the password is empty")
        return value

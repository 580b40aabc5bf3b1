"""HttpSettings: secure defaults, token rules, URL prefixes, and the messages a user reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamd.errors import ConfigError
from streamd.server.config import DEFAULT_PORT, HttpSettings, is_loopback_host
from streamd.settings import load_settings

TOKEN = "s3cret-token-0123456789"


def test_defaults_bind_loopback_without_token_and_refuse_urls():
    # when
    http = load_settings().http

    # then
    assert http.host == "127.0.0.1"
    assert http.port == DEFAULT_PORT
    assert http.token_required is False
    assert http.resolve_token() is None
    assert http.allowed_url_prefixes == []
    assert http.cors_origins == []
    assert http.allow_index_activation is False


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("camera-box.lan", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "http, message",
    [
        (
            {"host": "0.0.0.0"},
            "config: http: Value error, a token is required because host '0.0.0.0' is not loopback: "
            "set token_file, token_env or token",
        ),
        (
            {"require_token": True},
            "config: http: Value error, a token is required because require_token is true: "
            "set token_file, token_env or token",
        ),
        (
            {"host": "192.168.1.5", "require_token": False, "token_env": "T"},
            "config: http: Value error, require_token: false is refused for non-loopback host '192.168.1.5'",
        ),
        (
            {"token": TOKEN, "token_env": "T"},
            "config: http: Value error, give one of token, token_file, token_env, not token and token_env",
        ),
        (
            {"allowed_url_prefixes": ["ftp://files.example/"]},
            "config: http.allowed_url_prefixes: Value error, 'ftp://files.example/' is not an http(s) URL "
            "prefix with a host",
        ),
        (
            {"allowed_url_prefixes": ["https://user:pw@cdn.example/"]},
            "config: http.allowed_url_prefixes: Value error, 'https://user:pw@cdn.example/' must not contain "
            "a user name or password",
        ),
        ({"port": 70000}, "config: http.port: Input should be less than or equal to 65535"),
        ({"tokn": TOKEN}, "config: http.tokn: unknown key"),
    ],
)
def test_bad_http_settings_are_refused_with_a_clear_message(http, message):
    # when
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"http": http})

    # then
    assert str(err.value) == message


def test_a_relative_token_file_is_a_systemd_credential(tmp_path, monkeypatch):
    # given a unit with LoadCredential=http-token:... (systemd sets CREDENTIALS_DIRECTORY)
    (tmp_path / "http-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    http = HttpSettings(host="0.0.0.0", token_file=Path("http-token"))

    # then the token is read from there
    assert http.resolve_token() == TOKEN

    # and without systemd, a relative path is relative to the working directory
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    monkeypatch.chdir(tmp_path)
    assert http.resolve_token() == TOKEN
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ConfigError, match="http.token_file http-token: cannot read token"):
        http.resolve_token()


def test_token_from_file_is_read_and_stripped(tmp_path):
    # given
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    http = HttpSettings(host="0.0.0.0", token_file=path)

    # then
    assert http.token_required is True
    assert http.resolve_token() == TOKEN


def test_token_from_environment_is_read_when_resolved_not_when_loaded(monkeypatch):
    # given
    http = HttpSettings(host="0.0.0.0", token_env="STREAMD_TEST_TOKEN")
    monkeypatch.setenv("STREAMD_TEST_TOKEN", TOKEN)

    # then
    assert http.resolve_token() == TOKEN


def test_token_in_config_is_masked_when_dumped():
    # given
    from streamd.settings import dump_settings

    settings = load_settings(overrides={"http": {"token": TOKEN}})

    # when
    text = dump_settings(settings)

    # then
    assert TOKEN not in text
    assert "token: '**********'" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"token_env": "STREAMD_TEST_UNSET"}, "http.token_env $STREAMD_TEST_UNSET: the token is empty"),
        ({"token": "short"}, "http.token: the token is shorter than 16 characters"),
        ({"token_file": "/nonexistent/token"}, "http.token_file /nonexistent/token: cannot read token (No such file or directory)"),
    ],
)
def test_unusable_tokens_are_refused_when_resolved(kwargs, message, monkeypatch):
    # given
    monkeypatch.delenv("STREAMD_TEST_UNSET", raising=False)
    http = HttpSettings(host="0.0.0.0", **kwargs)

    # when
    with pytest.raises(ConfigError) as err:
        http.resolve_token()

    # then
    assert str(err.value) == message

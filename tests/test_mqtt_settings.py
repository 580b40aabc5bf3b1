"""mqtt: settings: validation messages a user reads, password sources, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamd.errors import ConfigError
from streamd.settings import load_settings
from streamd.sinks.config import MqttSettings


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"username": "cam"}, "mqtt: Value error, username is set without a password: set password_file, "
         "password_env or password"),
        ({"password_env": "MQTT_PW"}, "mqtt: Value error, password_env is set without a username"),
        ({"username": "u", "password": "p", "password_env": "X"},
         "mqtt: Value error, give one of password, password_file, password_env, not password and password_env"),
        ({"ca_file": "/etc/ca.pem"}, "mqtt: Value error, ca_file need tls: true"),
        ({"tls": True, "keyfile": "/k.pem"}, "mqtt: Value error, keyfile is set without certfile"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 5},
         "mqtt: Value error, reconnect_min_s (10.0) is above reconnect_max_s (5.0)"),
        ({"topic_prefix": "home/#"}, "mqtt.topic_prefix: Value error, topic_prefix 'home/#' must not contain "
         "the wildcards '+' or '#'"),
        ({"topic_prefix": "/streamd"}, "mqtt.topic_prefix: Value error, topic_prefix '/streamd' must be "
         "non-empty without a leading or trailing '/'"),
        ({"protocol": "4"}, "mqtt.protocol: Input should be '3.1.1' or '5'"),
        ({"qos": 3}, "mqtt.qos: Input should be 0, 1 or 2"),
        ({"hots": "x"}, "mqtt.hots: unknown key"),
    ],
)
def test_bad_settings_name_the_key(mqtt: dict, message: str) -> None:
    # given an mqtt section with a mistake
    # when it is loaded, then the error names the key and what is wrong
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"mqtt": mqtt})
    assert str(err.value) == f"config: {message}"


def test_defaults_and_protocol_from_yaml_number(tmp_path: Path) -> None:
    # given a YAML file where protocol is written as a number
    config = tmp_path / "streamd.yaml"
    config.write_text("mqtt:\n  host: broker.lan\n  protocol: 5\n  tls: true\n")

    # when it is loaded
    mqtt = load_settings(config).mqtt

    # then protocol is "5", TLS picks port 8883, and the documented defaults hold
    assert mqtt.protocol == "5"
    assert mqtt.effective_port == 8883
    assert (mqtt.topic_prefix, mqtt.qos, mqtt.discovery, mqtt.discovery_prefix) == ("streamd", 1, True, "homeassistant")
    assert mqtt.client_id.startswith("streamd-")
    assert MqttSettings().effective_port == 1883


def test_password_is_masked_in_dumps() -> None:
    # given a password written in the settings
    mqtt = MqttSettings(username="cam", password="s3cret-pw")

    # then neither repr nor a JSON dump shows it, but resolve_password returns it
    assert "s3cret-pw" not in repr(mqtt)
    assert "s3cret-pw" not in mqtt.model_dump_json()
    assert mqtt.resolve_password() == "s3cret-pw"


def test_password_file_relative_to_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a systemd credentials directory holding the password with a trailing newline
    (tmp_path / "mqtt_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    # when the password file is named relative to it
    mqtt = MqttSettings(username="cam", password_file=Path("mqtt_password"))

    # then the password is read from there without the newline
    assert mqtt.resolve_password() == "from-credential"


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the password in an environment variable
    monkeypatch.setenv("STREAMD_TEST_MQTT_PW", "env pass ")

    # then it is used as is (spaces are part of a password)
    assert MqttSettings(username="cam", password_env="STREAMD_TEST_MQTT_PW").resolve_password() == "env pass "


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"password_file": "/nonexistent/streamd-mqtt-pw"},
         "mqtt.password_file /nonexistent/streamd-mqtt-pw: cannot read the password (No such file or directory)"),
        ({"password_env": "STREAMD_TEST_UNSET_PW"},
         "mqtt.password_env $STREAMD_TEST_UNSET_PW: the environment variable is not set"),
        ({"password": ""}, "mqtt.password: the password is empty"),
    ],
)
def test_missing_password_source_is_a_clear_error(fields: dict, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a password source that gives nothing
    monkeypatch.delenv("STREAMD_TEST_UNSET_PW", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    mqtt = MqttSettings(username="cam", **fields)

    # when the password is resolved, then the error names the source
    with pytest.raises(ConfigError) as err:
        mqtt.resolve_password()
    assert str(err.value) == message

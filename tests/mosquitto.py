"""A real mosquitto broker for tests, and a subscriber that records what it receives.

``Mosquitto(workdir, ...)`` writes its own config in ``workdir`` and listens on free ports of
127.0.0.1 (never the system broker on 1883): a plain listener, and with ``tls=True`` a TLS
listener whose CA, server and client certificates are made at test time with the openssl CLI.
``users={"name": "password"}`` turns anonymous access off and writes a password file with
``mosquitto_passwd -b``. ``persistence=True`` keeps sessions and queued QoS 1 messages across a
``restart()`` on the same ports, the way a production broker does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import free_port
from streamd.types import IdentityEvent

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def require_mosquitto() -> None:
    """Skip (fail under CI=true) when mosquitto or openssl is not installed."""
    missing = [p for p in (MOSQUITTO, MOSQUITTO_PASSWD) if not os.access(p, os.X_OK)]
    if not shutil.which("openssl"):
        missing.append("openssl")
    if missing:
        message = f"not installed: {', '.join(missing)} (apt-get install mosquitto openssl)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@dataclass(frozen=True)
class Pki:
    """Test certificates: a CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> Pki:
    """Make a throw-away CA and certificates (EC P-256: fast) with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=streamd test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    for name, usage, san in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", "subjectAltName=DNS:streamd-test-client"),
    ):
        (directory / f"{name}.ext").write_text(
            f"{san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory,
        )
    return Pki(
        directory / "ca.crt", directory / "server.crt", directory / "server.key",
        directory / "client.crt", directory / "client.key",
    )


class Mosquitto:
    """One mosquitto process with a config of its own; start/stop/restart keep the same ports."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        require_certificate: bool = False,
        persistence: bool = False,
    ) -> None:
        require_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.pki = make_pki(self.workdir / "pki") if tls else None
        self.log_file = self.workdir / "mosquitto.log"
        self.conf_file = self.workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [
            "per_listener_settings false",
            "user root" if os.geteuid() == 0 else "",  # as root mosquitto would switch to a user that cannot read tmp
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
        ]
        if users:
            password_file = self.workdir / "passwd"
            password_file.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(password_file), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines += ["allow_anonymous true"]
        lines += [f"listener {self.port} 127.0.0.1"]
        if self.pki is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.pki.ca_cert}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                f"require_certificate {'true' if require_certificate else 'false'}",
            ]
        self.conf_file.write_text("\n".join(line for line in lines if line) + "\n")

    # ---- process

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until every listener accepts TCP connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}\n{self.log()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mosquitto did not listen on {port} within {timeout} s\n{self.log()}")
                    time.sleep(0.02)

    def stop(self) -> None:
        """Stop cleanly (SIGTERM: with persistence, sessions and queued messages are saved)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    dup: bool = False


class Subscriber:
    """A paho client on a background thread recording every message it receives.

    ``persistent=True`` uses a fixed client id and a persistent session with QoS 1, so that with
    a persistent broker nothing published while this subscriber was disconnected is missed.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.topics = topics
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        kwargs = {"clean_session": False} if persistent else {}
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or ("" if not persistent else "test-sub"), **kwargs
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"test subscriber could not subscribe to {topics}")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, bool(msg.dup)))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(messages)`` is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true; False on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def make_event(
    camera: str = "door",
    type: str = "new",
    label: str | None = None,
    *,
    track_id: int = 1,
    decided_at: float | None = None,
) -> IdentityEvent:
    """A track event as the pipeline makes it (frame 40 ms before the decision)."""
    decided = time.time() if decided_at is None else decided_at
    return IdentityEvent(
        event_id=uuid.uuid4().hex,
        type=type,
        camera=camera,
        track_id=track_id,
        label=label,
        score=0.71 if label else 0.0,
        margin=0.2 if label else 0.0,
        box=(100.0, 80.0, 180.0, 170.0),
        frame_ts=decided - 0.04,
        decided_at=decided,
        evidence=3 if label else 0,
        duration_s=2.5 if type == "end" else None,
        zones=("porch",),
        snapshot=f"{camera}/{track_id}.jpg",
    )

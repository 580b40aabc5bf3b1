"""A stand-in for systemd's notify socket: binds an AF_UNIX datagram socket and records what arrives.

``NotifySocket(tmp_path)`` binds a path; ``NotifySocket(abstract=True)`` binds a name in the
abstract namespace (``$NOTIFY_SOCKET=@name``). ``env`` is what to put in the daemon's
environment; ``messages`` are the datagrams received so far, each parsed into a dict.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class NotifySocket:
    def __init__(self, directory: Path | None = None, *, abstract: bool = False) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"streamd-test-{uuid.uuid4().hex}"
            self._sock.bind(b"\0" + name.encode())
            self.address = f"@{name}"
        else:
            assert directory is not None
            path = Path(directory) / "notify.sock"
            self._sock.bind(str(path))
            self.address = str(path)
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address}

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self._messages.append((time.monotonic(), fields))

    @property
    def messages(self) -> list[dict[str, str]]:
        with self._lock:
            return [m for _, m in self._messages]

    def timed(self) -> list[tuple[float, dict[str, str]]]:
        """(monotonic arrival time, fields) of every message."""
        with self._lock:
            return list(self._messages)

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [m for m in self.messages if key in m]

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str]:
        """The first message matching ``predicate``; AssertionError with everything seen on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if predicate(m):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no matching sd_notify message within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self._thread.join(1.0)
        if not self.address.startswith("@") and os.path.exists(self.address):
            os.unlink(self.address)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

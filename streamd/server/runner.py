"""Running the ASGI app with uvicorn in a background thread, with a clean start and stop.

The socket is bound in ``start()`` on the caller's thread, so "address in use" or "permission
denied" surfaces there as one StreamdError naming host and port, and port 0 works (tests ask
the kernel for a free port and read it back from ``port``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from streamd.errors import StreamdError

log = logging.getLogger(__name__)


class HttpServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread named ``http-server``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self._bound_port = 0

    @classmethod
    def from_settings(cls, settings: Any, app: Any, *, log_level: str = "warning") -> "HttpServer":
        """A server for ``app`` on ``http.host`` / ``http.port`` (an ``HttpSettings``)."""
        return cls(app, settings.host, settings.port, log_level=log_level)

    def __enter__(self) -> "HttpServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port actually listened on (the kernel's choice when 0 was asked), once started."""
        return self._bound_port or self._requested_port

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:8750``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving, and return once requests are accepted (or raise StreamdError)."""
        import uvicorn  # heavy-ish; only the daemon and tests that serve need it

        if self._thread is not None:
            raise RuntimeError("HttpServer.start() called twice")
        self._socket = self._bind()
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the daemon configures logging; uvicorn must not replace it
            log_level=self._log_level,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=1.0)
                reason = f" ({self._error})" if self._error else ""
                raise StreamdError(f"http: server on {self.host}:{self.port} did not start{reason}")
            time.sleep(0.01)
        log.info("http: serving on %s", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish for up to ``timeout`` s, then force."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(2.0)
        if thread.is_alive():
            log.warning("http: server thread still running %.1f s after stop", timeout)
        self._thread = None

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every kept-alive response waits ~40 ms (Nagle vs delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise StreamdError(f"http: cannot listen on {self.host}:{self._requested_port} ({exc.strerror})") from None
        self._bound_port = sock.getsockname()[1]
        return sock

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit from uvicorn's startup failure included
            self._error = exc
            log.error("http: server stopped: %s", exc)

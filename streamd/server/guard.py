"""The ASGI middleware in front of every route: bearer token and request body cap.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that the body cap also holds for chunked
uploads without a Content-Length: bytes are counted as the app reads them and the request is
answered 413 as soon as the cap is passed, before the rest is read into memory.
The token is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

from streamd.server.envelope import error_response

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths a scraper or an orchestrator probes without credentials (they reveal no personal data).
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions from body reading (others become 400)."""


class GuardMiddleware:
    """Refuses requests without the bearer token (401) and bodies over ``max_body_bytes`` (413)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        open_paths: frozenset[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self._token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self._token is not None and scope.get("path") not in self.open_paths:
            if not self._authorized(headers.get(b"authorization", b"")):
                response = error_response(
                    401, "missing or wrong bearer token (Authorization: Bearer ...)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if declared > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        await self._call_counting(scope, receive, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            # Still compare, so a wrong scheme costs the same time as a wrong token.
            credentials = b""
        return hmac.compare_digest(credentials.strip(), self._token or b"")

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(413, self._too_large_message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, self._too_large_message(), headers={"Connection": "close"})
        await response(scope, receive, send)

    def _too_large_message(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes (http.max_request_bytes)"

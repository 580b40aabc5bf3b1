"""The FastAPI application: operations endpoints plus the PaddleX face-recognition serving API.

Operations (plain JSON):
  GET /metrics             Prometheus exposition of the registry passed in (no token)
  GET /healthz             the process answers (no token)
  GET /readyz              every readiness check passes, else 503 with the reasons (no token)
  GET /health              PaddleX serving's health probe, in its envelope (no token)
  GET /api/cameras         camera state from the provider passed in
  GET /api/events/recent   the last identity events, filtered by camera, label, type
  GET /api/index           the serving index (generation, counts) and API-built index keys
  POST /api/index/activate make an API-built index the serving one (off unless allowed)

PaddleX serving (``{logId, errorCode, errorMsg, result}``): see ``streamd.server.paddlex``.

Every error, from any route, is PaddleX's error envelope with errorCode = HTTP status.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException
from starlette.responses import Response

from streamd import __version__
from streamd.metrics import Metrics
from streamd.server.config import HttpSettings
from streamd.server.envelope import ApiError, NoResultResponse, error_response, new_log_id, validation_message
from streamd.server.guard import OPEN_PATHS, GuardMiddleware
from streamd.server.recent import RecentEvents
from streamd.types import EVENT_TYPES

log = logging.getLogger(__name__)

#: A readiness check returns None when its part is ready, else one line saying why not.
ReadinessCheck = Callable[[], "str | None"]
#: Returns the current state of every camera: dicts, dataclasses or objects with ``to_dict()``.
CameraProvider = Callable[[], Iterable[Any]]


def create_app(
    settings: HttpSettings,
    metrics: Metrics,
    *,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    cameras: CameraProvider | None = None,
    recent: RecentEvents | None = None,
    face_api: Any = None,
    token: str | None = None,
) -> FastAPI:
    """Build the app. Collaborators are passed in; missing ones make their routes answer 503.

    ``face_api`` is a ``streamd.server.paddlex.FaceApi`` (the PaddleX endpoints and
    /api/index*). ``token`` overrides the one from ``settings`` (``settings.resolve_token()``
    is used otherwise); when a token exists it is enforced, on any host.
    """
    if token is None:
        token = settings.resolve_token()
    app = FastAPI(
        title="streamd",
        version=__version__,
        description="Face recognition on camera streams: operations endpoints and the PaddleX "
        "face-recognition serving API.",
    )
    _install_error_handlers(app)
    _add_operations_routes(app, metrics, readiness or {}, cameras, recent)
    if face_api is not None:
        from streamd.server.paddlex import add_face_routes

        add_face_routes(app, face_api, settings)
    else:
        _add_unavailable_face_routes(app)
    app.add_middleware(
        GuardMiddleware,
        token=token,
        max_body_bytes=settings.max_request_bytes,
        open_paths=OPEN_PATHS | {"/health"},
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Added last = outermost, so browsers' preflight requests are answered before the token check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


# --------------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        log_id = new_log_id()
        log.info("http %s %s -> %d %s [%s]", request.method, request.url.path, exc.status, exc.message, log_id)
        return error_response(exc.status, exc.message, log_id=log_id)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_id = new_log_id()
        log.exception("http %s %s failed [%s]", request.method, request.url.path, log_id)
        return error_response(500, "Internal server error", log_id=log_id)


# --------------------------------------------------------------------------- operations


def _add_operations_routes(
    app: FastAPI,
    metrics: Metrics,
    readiness: Mapping[str, ReadinessCheck],
    cameras: CameraProvider | None,
    recent: RecentEvents | None,
) -> None:
    registry = metrics.registry
    # The probes are async: they run on the event loop, so they answer even while every worker
    # thread is busy with face recognition requests.

    @app.get("/metrics", tags=["operations"], response_class=Response, summary="Prometheus metrics")
    async def get_metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Engine, index and outputs are ready",
        responses={503: {"description": "Not ready; checks say why"}},
    )
    async def readyz() -> JSONResponse:
        results = {name: _run_check(check) for name, check in readiness.items()}
        ready = all(reason is None for reason in results.values())
        body = {"ready": ready, "checks": {name: reason or "ok" for name, reason in results.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/health", tags=["operations"], summary="PaddleX serving's health probe", response_model=NoResultResponse)
    async def paddlex_health() -> NoResultResponse:
        return NoResultResponse(logId=new_log_id(), errorCode=0, errorMsg="Healthy")

    @app.get(
        "/api/cameras",
        tags=["operations"],
        summary="State of every camera",
        responses={503: {"model": NoResultResponse}},
    )
    def get_cameras() -> dict[str, list[Any]]:
        if cameras is None:
            raise ApiError(503, "camera state is not available in this process")
        return {"cameras": [to_jsonable(state) for state in cameras()]}

    @app.get(
        "/api/events/recent",
        tags=["operations"],
        summary="The last identity events, newest first",
        responses={503: {"model": NoResultResponse}, 422: {"model": NoResultResponse}},
    )
    def get_recent_events(
        camera: str | None = Query(None, description="Only this camera's events."),
        label: str | None = Query(None, description="Only events naming this label."),
        type: str | None = Query(None, description=f"Only this event type: {', '.join(EVENT_TYPES)}."),
        limit: int = Query(100, ge=1, le=10_000, description="Most events returned."),
    ) -> dict[str, list[dict[str, Any]]]:
        if recent is None:
            raise ApiError(503, "recent events are not kept in this process")
        if type is not None and type not in EVENT_TYPES:
            raise ApiError(422, f"type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
        events = recent.query(camera=camera, label=label, type=type, limit=limit)
        return {"events": [event.to_dict() for event in events]}


def _run_check(check: ReadinessCheck) -> str | None:
    try:
        return check()
    except Exception as exc:  # a broken check means "not ready", never a 500
        return f"check failed: {type(exc).__name__}: {exc}"


def to_jsonable(value: Any) -> Any:
    """Camera states and similar objects as JSON: ``to_dict()``, dataclasses, mappings, plain values."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _add_unavailable_face_routes(app: FastAPI) -> None:
    """Without an engine the PaddleX routes still exist (clients get a clear 503, not a 404)."""
    from streamd.server.paddlex import FACE_ENDPOINTS

    for path in FACE_ENDPOINTS:

        @app.post(path, tags=["face recognition"], include_in_schema=False)
        def unavailable() -> None:
            raise ApiError(503, "face recognition is not available in this process (no engine loaded)")


# --------------------------------------------------------------------------- wiring


def index_readiness(holder: Any) -> ReadinessCheck:
    """A readiness check: ready once an index (even an empty one) is being served."""

    def check() -> str | None:
        return None if holder.get() is not None else "no serving index loaded yet"

    return check


def create_server(
    settings: Any,
    metrics: Metrics,
    holder: Any,
    *,
    engine: Any = None,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    cameras: CameraProvider | None = None,
    recent: RecentEvents | None = None,
    log_level: str = "warning",
) -> Any:
    """The daemon's HTTP server from the whole ``Settings`` (not started); None when ``http.enabled`` is false.

    ``engine`` (a FaceEngine) enables the PaddleX endpoints; ``holder`` (an IndexHolder) is the
    serving index they and /readyz use ("index" is added to ``readiness`` unless given).
    """
    from streamd.server.face_api import FaceApi
    from streamd.server.runner import HttpServer

    http: HttpSettings = settings.http
    if not http.enabled:
        return None
    checks = {"index": index_readiness(holder), **(readiness or {})}
    face_api = FaceApi.from_settings(settings, engine, holder) if engine is not None else None
    app = create_app(http, metrics, readiness=checks, cameras=cameras, recent=recent, face_api=face_api)
    return HttpServer.from_settings(http, app, log_level=log_level)

"""The HTTP server run for real (uvicorn on a loopback port): metrics, health, state, token, caps."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from streamd.errors import StreamdError
from streamd.metrics import Metrics
from streamd.server.app import create_app
from streamd.server.config import HttpSettings
from streamd.server.recent import RecentEvents
from streamd.server.runner import HttpServer
from streamd.types import IdentityEvent

TOKEN = "tok-0123456789abcdef-xyz"


@dataclass(frozen=True)
class CameraState:
    name: str
    state: str
    next_retry_at: float | None = None


def _event(n: int, camera: str, label: str | None, type: str = "identified") -> IdentityEvent:
    return IdentityEvent(
        event_id=f"e{n}", type=type, camera=camera, track_id=n, label=label, score=0.9, margin=0.2,
        box=(1, 2, 3, 4), frame_ts=100.0 + n, decided_at=100.1 + n, seq=n,
    )


@pytest.fixture
def parts():
    """The collaborators create_app takes, as the daemon would pass them."""
    metrics = Metrics(process=True)
    recent = RecentEvents(maxlen=10)
    ready = {"engine": None, "index": None, "mqtt": None}
    readiness = {name: (lambda name=name: ready[name]) for name in ready}
    cameras = [CameraState("door", "streaming"), CameraState("yard", "backoff", 1712.5)]
    return metrics, recent, ready, readiness, cameras


@pytest.fixture
def serve(parts) -> Iterator:
    """serve(settings) -> an httpx client of a running server; stopped at the end of the test."""
    metrics, recent, _, readiness, cameras = parts
    servers: list[HttpServer] = []
    clients: list[httpx.Client] = []

    def start(settings: HttpSettings | None = None, **kwargs) -> httpx.Client:
        app = create_app(
            settings or HttpSettings(), metrics, readiness=readiness, cameras=lambda: cameras, recent=recent, **kwargs
        )
        server = HttpServer(app, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        client = httpx.Client(base_url=server.url, timeout=10)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --------------------------------------------------------------------------- /metrics


def test_metrics_exposes_names_and_values_after_increments(serve, parts):
    # given
    metrics = parts[0]
    client = serve()
    metrics.frames_decoded.labels("door").inc(25)
    metrics.frames_dropped.labels("door", "queue_full").inc(2)
    metrics.stream_up.labels("door").set(1)
    metrics.decisions.labels("door", "unknown").inc()
    metrics.stage_seconds.labels("door", "detect").observe(0.03)
    metrics.mqtt_connected.set(1)

    # when
    response = client.get("/metrics")

    # then
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.text)
    assert samples[("streamd_frames_decoded_total", (("camera", "door"),))] == 25
    assert samples[("streamd_frames_dropped_total", (("camera", "door"), ("reason", "queue_full")))] == 2
    assert samples[("streamd_stream_up", (("camera", "door"),))] == 1
    assert samples[("streamd_decisions_total", (("camera", "door"), ("outcome", "unknown")))] == 1
    assert samples[("streamd_stage_duration_seconds_bucket", (("camera", "door"), ("le", "0.05"), ("stage", "detect")))] == 1
    assert samples[("streamd_stage_duration_seconds_bucket", (("camera", "door"), ("le", "0.025"), ("stage", "detect")))] == 0
    assert samples[("streamd_mqtt_connected", ())] == 1
    assert samples[("process_resident_memory_bytes", ())] > 0


def test_metrics_speaks_openmetrics_when_asked(serve):
    # given
    client = serve()

    # when
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    # then
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# --------------------------------------------------------------------------- health


def test_healthz_answers_while_alive(serve):
    # given
    client = serve()

    # when
    response = client.get("/healthz")

    # then
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_200_when_every_check_passes(serve):
    # given
    client = serve()

    # when
    response = client.get("/readyz")

    # then
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"engine": "ok", "index": "ok", "mqtt": "ok"}}


def test_readyz_is_503_with_the_reasons_when_a_part_is_not_ready(serve, parts):
    # given
    ready = parts[2]
    client = serve()
    ready["index"] = "no index loaded from /var/lib/streamd/index"
    ready["mqtt"] = "not connected to broker:1883"

    # when
    response = client.get("/readyz")

    # then
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {
            "engine": "ok",
            "index": "no index loaded from /var/lib/streamd/index",
            "mqtt": "not connected to broker:1883",
        },
    }


def test_a_check_that_raises_makes_readyz_503_not_500(serve):
    # given
    def broken() -> str | None:
        raise RuntimeError("boom")

    metrics = Metrics()
    app = create_app(HttpSettings(), metrics, readiness={"engine": broken})

    # when
    with HttpServer(app) as server:
        response = httpx.get(f"{server.url}/readyz")

    # then
    assert response.status_code == 503
    assert response.json()["checks"] == {"engine": "check failed: RuntimeError: boom"}


def test_paddlex_health_probe_answers_in_the_envelope(serve):
    # given
    client = serve()

    # when
    body = client.get("/health").json()

    # then
    assert (body["errorCode"], body["errorMsg"]) == (0, "Healthy")
    assert len(body["logId"]) == 36


# --------------------------------------------------------------------------- state


def test_cameras_lists_the_provider_state(serve):
    # given
    client = serve()

    # when
    response = client.get("/api/cameras")

    # then
    assert response.status_code == 200
    assert response.json() == {
        "cameras": [
            {"name": "door", "state": "streaming", "next_retry_at": None},
            {"name": "yard", "state": "backoff", "next_retry_at": 1712.5},
        ]
    }


def test_recent_events_are_newest_first_and_filtered(serve, parts):
    # given
    recent = parts[1]
    client = serve()
    for n, (camera, label) in enumerate([("door", "ann"), ("yard", "bob"), ("door", None), ("door", "ann")]):
        recent.add(_event(n, camera, label))
    recent.add(_event(4, "door", "ann", type="end"))

    # when
    everything = client.get("/api/events/recent").json()["events"]
    door_ann = client.get("/api/events/recent", params={"camera": "door", "label": "ann"}).json()["events"]
    ends = client.get("/api/events/recent", params={"type": "end"}).json()["events"]
    last_two = client.get("/api/events/recent", params={"limit": 2}).json()["events"]

    # then
    assert [e["event_id"] for e in everything] == ["e4", "e3", "e2", "e1", "e0"]
    assert [e["event_id"] for e in door_ann] == ["e4", "e3", "e0"]
    assert [e["event_id"] for e in ends] == ["e4"]
    assert [e["event_id"] for e in last_two] == ["e4", "e3"]
    assert everything[0] == _event(4, "door", "ann", type="end").to_dict()


def test_recent_events_buffer_keeps_only_the_newest(parts):
    # given
    recent = RecentEvents(maxlen=3)

    # when
    for n in range(5):
        recent.add(_event(n, "door", "ann"))

    # then
    assert len(recent) == 3
    assert [e.event_id for e in recent.query()] == ["e4", "e3", "e2"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"type": "gone"}, "type must be one of new, identified, update, end, got 'gone'"),
        ({"limit": 0}, '[{"type": "greater_than_equal", "loc": "query.limit", "msg": "Input should be greater than or equal to 1"}]'),
        ({"limit": "x"}, '[{"type": "int_parsing", "loc": "query.limit", "msg": "Input should be a valid integer, unable to parse string as an integer"}]'),
    ],
)
def test_bad_recent_event_queries_are_422_with_the_reason(serve, params, message):
    # given
    client = serve()

    # when
    response = client.get("/api/events/recent", params=params)

    # then
    assert response.status_code == 422
    assert response.json()["errorCode"] == 422
    assert response.json()["errorMsg"] == message


def test_state_routes_without_a_provider_are_503(parts):
    # given
    app = create_app(HttpSettings(), parts[0])

    # when
    with HttpServer(app) as server:
        cameras = httpx.get(f"{server.url}/api/cameras")
        events = httpx.get(f"{server.url}/api/events/recent")
        infer = httpx.post(f"{server.url}/face-recognition-infer", json={"image": "x"})

    # then
    assert (cameras.status_code, cameras.json()["errorMsg"]) == (503, "camera state is not available in this process")
    assert (events.status_code, events.json()["errorMsg"]) == (503, "recent events are not kept in this process")
    assert (infer.status_code, infer.json()["errorMsg"]) == (
        503, "face recognition is not available in this process (no engine loaded)"
    )


def test_unknown_paths_and_methods_answer_in_the_envelope(serve):
    # given
    client = serve()

    # when
    missing = client.get("/nope")
    wrong_method = client.get("/face-recognition-infer")

    # then
    assert (missing.status_code, missing.json()["errorCode"], missing.json()["errorMsg"]) == (404, 404, "Not Found")
    assert (wrong_method.status_code, wrong_method.json()["errorCode"]) == (405, 405)


# --------------------------------------------------------------------------- token


@pytest.fixture(scope="module")
def token_settings() -> HttpSettings:
    # Bound to loopback for the test, but with the token required as it is off-loopback.
    return HttpSettings(require_token=True, token=TOKEN)


@pytest.fixture(scope="module")
def token_client(token_settings) -> Iterator[httpx.Client]:
    """One token-protected server shared by the many parametrized cases below."""
    app = create_app(token_settings, Metrics(), cameras=lambda: [], recent=RecentEvents())
    with HttpServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/health"])
def test_probes_need_no_token(token_client, path):
    # when
    response = token_client.get(path)

    # then
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/api/cameras", "/api/events/recent", "/openapi.json", "/docs"])
def test_everything_else_needs_the_right_token(token_client, headers, path):
    # when
    response = token_client.get(path, headers=headers)

    # then
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["errorMsg"] == "missing or wrong bearer token (Authorization: Bearer ...)"


def test_the_right_token_opens_the_api(token_client):
    # when
    cameras = token_client.get("/api/cameras", headers={"Authorization": f"Bearer {TOKEN}"})
    lower_scheme = token_client.get("/openapi.json", headers={"Authorization": f"bearer {TOKEN}"})

    # then
    assert cameras.status_code == 200
    assert lower_scheme.status_code == 200


def test_a_configured_token_is_enforced_on_loopback_too(serve):
    # given
    client = serve(HttpSettings(token=TOKEN))

    # when
    response = client.get("/api/cameras")

    # then
    assert response.status_code == 401


def test_the_token_never_reaches_the_log(serve, token_settings, caplog):
    # given
    caplog.set_level(logging.DEBUG)
    client = serve(token_settings)

    # when
    client.get("/api/cameras", headers={"Authorization": f"Bearer {TOKEN}"})
    client.get("/api/cameras", headers={"Authorization": f"Bearer {TOKEN}-wrong"})
    client.post("/face-recognition-infer", headers={"Authorization": f"Bearer {TOKEN}"}, json={"image": TOKEN})

    # then
    assert TOKEN not in caplog.text


# --------------------------------------------------------------------------- size cap and CORS


def test_a_body_over_the_cap_is_413(serve):
    # given
    client = serve(HttpSettings(max_request_bytes=4096))

    # when
    response = client.post("/face-recognition-infer", json={"image": "A" * 8000})

    # then
    assert response.status_code == 413
    assert response.json() == {
        "logId": response.json()["logId"],
        "errorCode": 413,
        "errorMsg": "request body is larger than 4096 bytes (http.max_request_bytes)",
    }


def test_cors_is_off_by_default_and_answers_preflight_when_configured(serve):
    # given
    plain = serve(HttpSettings(require_token=True, token=TOKEN))
    cors = serve(HttpSettings(require_token=True, token=TOKEN, cors_origins=["https://dash.example"]))
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}

    # when
    off = plain.get("/metrics", headers={"Origin": "https://dash.example"})
    on = cors.options("/face-recognition-infer", headers=preflight)
    other_origin = cors.options("/face-recognition-infer", headers={**preflight, "Origin": "https://evil.example"})

    # then
    assert "access-control-allow-origin" not in off.headers
    assert on.status_code == 200
    assert on.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in other_origin.headers


def test_openapi_document_lists_every_route(serve):
    # given
    client = serve()

    # when
    paths = client.get("/openapi.json").json()["paths"]

    # then
    for path in ("/metrics", "/healthz", "/readyz", "/api/cameras", "/api/events/recent"):
        assert path in paths


# --------------------------------------------------------------------------- HttpServer


def test_server_from_settings_listens_on_the_configured_port_and_stops_cleanly(parts):
    # given
    settings = HttpSettings(port=free_port())
    server = HttpServer.from_settings(settings, create_app(settings, parts[0]))

    # when
    server.start()
    alive = httpx.get(f"http://127.0.0.1:{settings.port}/healthz").status_code
    started = time.monotonic()
    server.stop(timeout=5)
    stop_seconds = time.monotonic() - started

    # then
    assert alive == 200
    assert server.running is False
    assert stop_seconds < 5
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{settings.port}/healthz")


def test_a_port_in_use_fails_start_with_one_clear_line(parts):
    # given
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(create_app(HttpSettings(), parts[0]), "127.0.0.1", port)

        # when
        with pytest.raises(StreamdError) as err:
            server.start()

    # then
    assert str(err.value) == f"http: cannot listen on 127.0.0.1:{port} (Address already in use)"
    assert server.running is False


# --------------------------------------------------------------------------- wiring from Settings


def test_create_server_from_settings_reports_index_readiness():
    # given
    from streamd.index.holder import IndexHolder
    from streamd.index.library import FeatureLibrary
    from streamd.server.app import create_server
    from streamd.settings import load_settings

    settings = load_settings(overrides={"http": {"port": free_port()}})
    holder = IndexHolder()
    server = create_server(settings, Metrics(), holder, readiness={"mqtt": lambda: None})

    # when
    with server:
        before = httpx.get(f"{server.url}/readyz")
        holder.swap(FeatureLibrary.create(8), "test")
        after = httpx.get(f"{server.url}/readyz")

    # then
    assert server.port == settings.http.port
    assert (before.status_code, before.json()["checks"]) == (503, {"index": "no serving index loaded yet", "mqtt": "ok"})
    assert (after.status_code, after.json()["checks"]) == (200, {"index": "ok", "mqtt": "ok"})


def test_create_server_is_none_when_http_is_disabled():
    # given
    from streamd.index.holder import IndexHolder
    from streamd.server.app import create_server
    from streamd.settings import load_settings

    settings = load_settings(overrides={"http": {"enabled": False}})

    # then
    assert create_server(settings, Metrics(), IndexHolder()) is None


class _BlockedFaceApi:
    """A face API whose infer waits until released: stands for slow recognition on every worker thread."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def infer(self, image: str, **kwargs) -> dict:
        self.entered.release()
        self.release.wait(30)
        return {"faces": []}


def test_probes_answer_while_every_worker_thread_is_busy(parts):
    # given: more blocked recognition requests than the server has worker threads (40)
    face_api = _BlockedFaceApi()
    app = create_app(HttpSettings(), parts[0], readiness=parts[3], face_api=face_api)
    with HttpServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            busy = [
                threading.Thread(target=client.post, args=("/face-recognition-infer",), kwargs={"json": {"image": "x"}})
                for _ in range(45)
            ]
            for thread in busy:
                thread.start()
            for _ in range(40):
                assert face_api.entered.acquire(timeout=10)

            # when
            with httpx.Client(base_url=server.url, timeout=5) as probe:
                health = probe.get("/healthz").status_code
                ready = probe.get("/readyz").status_code
                scraped = probe.get("/metrics").status_code
            face_api.release.set()
            for thread in busy:
                thread.join(10)

    # then
    assert (health, ready, scraped) == (200, 200, 200)

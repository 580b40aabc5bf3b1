"""Fuzz every operation of /openapi.json with schemathesis: whatever a client sends, never a 5xx.

The server runs for real with the dlib engine, a serving index and the token required, so the
generated requests pass the guard and reach the handlers. Examples per operation are bounded to
keep this well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from streamd.faces.engine import FaceEngine
from streamd.index.holder import IndexHolder
from streamd.index.library import FeatureLibrary
from streamd.metrics import Metrics
from streamd.server.app import create_app
from streamd.server.config import HttpSettings
from streamd.server.face_api import FaceApi
from streamd.server.recent import RecentEvents
from streamd.server.runner import HttpServer
from streamd.settings import EngineSettings
from streamd.types import IdentityEvent

pytestmark = pytest.mark.shared

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server_url(faces_dir) -> Iterator[str]:
    engine = FaceEngine.from_settings(EngineSettings())
    holder = IndexHolder()
    serving = FeatureLibrary.create(engine.dim, fingerprint=engine.fingerprint)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, engine.dim)).astype(np.float32)
    serving.add(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), ["ann", "ann", "bob", "cy"])
    holder.swap(serving, "fuzz")
    http = HttpSettings(require_token=True, token=TOKEN, max_request_bytes=256 * 1024, allow_index_activation=False)
    recent = RecentEvents()
    recent.add(IdentityEvent(event_id="e1", type="new", camera="door", track_id=1, label=None, score=0.0,
                             margin=0.0, box=(0, 0, 1, 1), frame_ts=1.0, decided_at=1.1))
    app = create_app(
        http, Metrics(process=True), readiness={"engine": lambda: None},
        cameras=lambda: [{"name": "door", "state": "streaming"}], recent=recent,
        face_api=FaceApi(engine, holder, http=http),
    )
    with HttpServer(app) as server:
        yield server.url


@pytest.fixture(scope="module")
def api_schema(server_url):
    return schemathesis.openapi.from_url(f"{server_url}/openapi.json", headers=AUTH)


_PLAIN_JSON = ("/metrics", "/healthz", "/readyz", "/api/cameras", "/api/events/recent", "/api/index")


def _check(case, failures: list[str]) -> None:
    response = case.call(headers=AUTH)
    where = f"{case.method} {case.path} {case.query or ''} {str(case.body)[:80]!r}"
    if response.status_code >= 500:
        failures.append(f"{where}: {response.status_code} {response.text[:200]}")
    elif case.path not in _PLAIN_JSON:
        body = response.json()
        expected = 0 if response.status_code == 200 else response.status_code
        if not {"logId", "errorCode", "errorMsg"} <= body.keys() or body["errorCode"] != expected:
            failures.append(f"{where}: not PaddleX's envelope: {body}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_makes_the_server_fail(api_schema, mode):
    # given
    operations = [result.ok() for result in api_schema.get_all_operations()]
    failures: list[str] = []

    # when
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def fuzz(case) -> None:
            _check(case, failures)

        try:
            fuzz()
        except Unsatisfiable:
            pass  # an operation without inputs that can be made invalid (GET /healthz in negative mode)

    # then
    assert len(operations) >= 12
    assert failures == []

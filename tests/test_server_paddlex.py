"""The PaddleX serving API with the real dlib engine, real faiss and real face photos.

Runs the client flow from PaddleX's face-recognition docs (build -> add -> remove -> infer)
against a running server, then the serving-index rules (an API build never replaces what the
cameras use; activation does, only when allowed), image URLs, and the errors a client reads.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from streamd.faces.engine import FaceEngine
from streamd.images import decode_image
from streamd.index.holder import IndexHolder
from streamd.index.library import FeatureLibrary
from streamd.metrics import Metrics
from streamd.server.app import create_app
from streamd.server.config import HttpSettings
from streamd.server.face_api import DecisionSettings, FaceApi, save_and_swap
from streamd.server.runner import HttpServer
from streamd.settings import EngineSettings

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def engine(faces_dir) -> FaceEngine:
    return FaceEngine.from_settings(EngineSettings())  # dlib HOG + ResNet, the offline default


@pytest.fixture(scope="module")
def photo(faces_dir):
    def path(person: str, n: int) -> Path:
        return faces_dir / "identities" / person / f"{person}_{n:04d}.jpg"

    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture
def holder() -> IndexHolder:
    return IndexHolder(Metrics())


@pytest.fixture
def serve(engine, holder) -> Iterator:
    """serve(http_settings, activator=None) -> client of a running server with the real engine."""
    running: list[tuple[HttpServer, httpx.Client]] = []

    def start(http: HttpSettings | None = None, **kwargs) -> httpx.Client:
        http = http or HttpSettings()
        face_api = FaceApi(engine, holder, http=http, **kwargs)
        server = HttpServer(create_app(http, Metrics(), face_api=face_api))
        server.start()
        client = httpx.Client(base_url=server.url, timeout=60)
        running.append((server, client))
        return client

    yield start
    for server, client in running:
        client.close()
        server.stop()


def _ok(response: httpx.Response) -> dict:
    """The result of a successful PaddleX envelope, after checking the envelope itself."""
    body = response.json()
    assert response.status_code == 200, body
    assert body["errorCode"] == 0
    assert body["errorMsg"] == "Success"
    assert len(body["logId"]) == 36
    return body["result"]


def _labels(result: dict) -> list[str | None]:
    return [face["recResults"][0]["label"] if face["recResults"] else None for face in result["faces"]]


# --------------------------------------------------------------------------- PaddleX's client flow


def test_paddlex_client_flow_build_add_remove_infer(serve, photo):
    # given: PaddleX's example, with real people
    client = serve()
    base_pairs = [
        {"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"},
        {"image": b64(photo("Serena_Williams", 1)), "label": "Serena_Williams"},
        {"image": b64(photo("Vladimir_Putin", 1)), "label": "Vladimir_Putin"},
    ]
    pairs_to_add = [{"image": b64(photo("Vladimir_Putin", 2)), "label": "Vladimir_Putin"}]
    ids_to_remove = [1]

    # when
    built = _ok(client.post("/face-recognition-index-build", json={"imageLabelPairs": base_pairs}))
    key = built["indexKey"]
    added = _ok(client.post("/face-recognition-index-add", json={"imageLabelPairs": pairs_to_add, "indexKey": key}))
    removed = _ok(client.post("/face-recognition-index-remove", json={"ids": ids_to_remove, "indexKey": key}))
    putin = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Vladimir_Putin", 3)), "indexKey": key}))
    hugo = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Hugo_Chavez", 3)), "indexKey": key}))
    serena = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Serena_Williams", 3)), "indexKey": key}))

    # then
    assert (built["imageCount"], built["ids"]) == (3, [0, 1, 2])
    assert (added["imageCount"], added["ids"]) == (4, [3])
    assert removed == {"imageCount": 3}
    assert _labels(putin) == ["Vladimir_Putin"]
    assert _labels(hugo) == ["Hugo_Chavez"]
    assert _labels(serena) == [None], "a removed person must not be named"
    face = putin["faces"][0]
    x1, y1, x2, y2 = face["bbox"]
    assert 0 <= x1 < x2 <= 250 and 0 <= y1 < y2 <= 250
    assert face["recResults"][0]["score"] >= 0.82
    scores = [r["score"] for r in face["recResults"]]
    assert scores == sorted(scores, reverse=True)
    annotated = decode_image(base64.b64decode(putin["image"]), name="annotated")
    assert annotated.shape == (250, 250, 3)


def test_infer_without_visualize_returns_no_image_and_det_threshold_filters(serve, photo):
    # given
    client = serve()
    key = _ok(client.post("/face-recognition-index-build", json={
        "imageLabelPairs": [{"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"}]}))["indexKey"]
    probe = b64(photo("Hugo_Chavez", 2))

    # when
    plain = _ok(client.post("/face-recognition-infer", json={"image": probe, "indexKey": key, "visualize": False}))
    strict = _ok(client.post("/face-recognition-infer", json={"image": probe, "indexKey": key, "detThreshold": 1e6}))

    # then
    assert "image" not in plain
    assert _labels(plain) == ["Hugo_Chavez"]
    assert strict["faces"] == []


def test_an_image_without_a_face_yields_no_faces(serve, faces_dir, photo):
    # given
    client = serve()
    key = _ok(client.post("/face-recognition-index-build", json={
        "imageLabelPairs": [{"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"}]}))["indexKey"]

    # when
    result = _ok(client.post("/face-recognition-infer", json={
        "image": b64(faces_dir / "negatives" / "dlib" / "dog.jpg"), "indexKey": key, "visualize": False}))

    # then
    assert result == {"faces": []}


# --------------------------------------------------------------------------- the serving index


def test_infer_without_key_uses_the_serving_index_and_api_builds_never_replace_it(serve, holder, engine, photo):
    # given: the daemon serves an index of Putin only
    serving = FeatureLibrary.create(engine.dim, fingerprint=engine.fingerprint)
    for n in (1, 2):
        serving.add(np.stack([engine.analyze(decode_image(photo("Vladimir_Putin", n).read_bytes()))[0].vector]),
                    ["Vladimir_Putin"])
    holder.swap(serving, "test")
    client = serve()

    # when
    _ok(client.post("/face-recognition-index-build", json={
        "imageLabelPairs": [{"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"}]}))
    putin = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Vladimir_Putin", 3))}))
    hugo = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Hugo_Chavez", 3))}))
    state = client.get("/api/index").json()

    # then
    assert _labels(putin) == ["Vladimir_Putin"]
    assert _labels(hugo) == [None]
    assert holder.generation == 1 and holder.get() is serving
    assert state["serving"]["generation"] == 1
    assert state["serving"]["vectors"] == 2
    assert len(state["indexKeys"]) == 1


def test_infer_without_key_and_without_serving_index_is_503(serve, photo):
    # given
    client = serve()

    # when
    response = client.post("/face-recognition-infer", json={"image": b64(photo("Hugo_Chavez", 1))})

    # then
    assert response.status_code == 503
    assert response.json()["errorMsg"] == (
        "no serving index is loaded; give an indexKey from /face-recognition-index-build"
    )


def test_activation_is_refused_unless_allowed(serve, photo, tmp_path):
    # given
    client = serve(HttpSettings())
    key = _ok(client.post("/face-recognition-index-build", json={
        "imageLabelPairs": [{"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"}]}))["indexKey"]

    # when
    response = client.post("/api/index/activate", json={"indexKey": key})

    # then
    assert response.status_code == 403
    assert response.json()["errorMsg"] == "index activation is off (set http.allow_index_activation: true)"


def test_activation_saves_the_index_and_swaps_it_in(serve, holder, engine, photo, tmp_path):
    # given
    index_dir = tmp_path / "index"
    client = serve(HttpSettings(allow_index_activation=True), activator=save_and_swap(index_dir, engine, holder))
    key = _ok(client.post("/face-recognition-index-build", json={"imageLabelPairs": [
        {"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"},
        {"image": b64(photo("Serena_Williams", 1)), "label": "Serena_Williams"},
    ]}))["indexKey"]

    # when
    activated = client.post("/api/index/activate", json={"indexKey": key})
    hugo = _ok(client.post("/face-recognition-infer", json={"image": b64(photo("Hugo_Chavez", 2))}))

    # then
    assert activated.status_code == 200
    assert activated.json()["serving"]["generation"] == 1
    assert activated.json()["serving"]["source"] == f"api:{key}"
    assert holder.state.source == f"api:{key}"
    on_disk = FeatureLibrary.load(index_dir, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint)
    assert dict(on_disk.labels) == {0: "Hugo_Chavez", 1: "Serena_Williams"}
    assert _labels(hugo) == ["Hugo_Chavez"]


# --------------------------------------------------------------------------- image URLs


class _PhotoHandler(http.server.BaseHTTPRequestHandler):
    root: Path = Path("/nonexistent")
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def photo_origin(faces_dir) -> Iterator[str]:
    _PhotoHandler.root = faces_dir / "identities"
    _PhotoHandler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PhotoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_urls_are_fetched_only_from_allowed_prefixes(serve, photo_origin):
    # given
    url = f"{photo_origin}/Hugo_Chavez/Hugo_Chavez_0001.jpg"
    pairs = {"imageLabelPairs": [{"image": url, "label": "Hugo_Chavez"}]}
    closed = serve(HttpSettings())
    allowed = serve(HttpSettings(allowed_url_prefixes=[f"{photo_origin}/Hugo_Chavez/"]))

    # when
    refused = closed.post("/face-recognition-index-build", json=pairs)
    fetches_after_refusal = list(_PhotoHandler.hits)
    built = allowed.post("/face-recognition-index-build", json=pairs)
    other_person = allowed.post("/face-recognition-infer", json={
        "image": f"{photo_origin}/Serena_Williams/Serena_Williams_0001.jpg"})

    # then
    assert refused.status_code == 403
    assert refused.json()["errorMsg"] == (
        "imageLabelPairs[0].image: image URLs are refused; send base64 or set http.allowed_url_prefixes"
    )
    assert fetches_after_refusal == []
    assert _ok(built)["imageCount"] == 1
    assert other_person.status_code == 403
    assert other_person.json()["errorMsg"] == (
        f"image: URL {photo_origin}/Serena_Williams/Serena_Williams_0001.jpg is not in http.allowed_url_prefixes"
    )
    assert _PhotoHandler.hits == ["/Hugo_Chavez/Hugo_Chavez_0001.jpg"]


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def built(engine, photo) -> Iterator[tuple[httpx.Client, str]]:
    """One server with one keyed index, shared by the error cases (none of them changes it)."""
    http = HttpSettings(max_images_per_request=2)
    face_api = FaceApi(engine, IndexHolder(), http=http, decision=DecisionSettings(multiple_faces="skip"))
    with HttpServer(create_app(http, Metrics(), face_api=face_api)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        key = _ok(client.post("/face-recognition-index-build", json={
            "imageLabelPairs": [{"image": b64(photo("Hugo_Chavez", 1)), "label": "Hugo_Chavez"}]}))["indexKey"]
        yield client, key


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/face-recognition-index-build", {}, 422,
         '[{"type": "missing", "loc": "body.imageLabelPairs", "msg": "Field required"}]'),
        ("/face-recognition-index-build", {"imageLabelPairs": []}, 422,
         '[{"type": "too_short", "loc": "body.imageLabelPairs", '
         '"msg": "List should have at least 1 item after validation, not 0"}]'),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "{dog}", "label": "Dog"}]}, 422,
         "imageLabelPairs[0].image: no face found"),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "{two}", "label": "Pair"}]}, 422,
         "imageLabelPairs[0].image: 2 faces, expected one (gallery.multiple_faces is skip)"),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "bm90IGFuIGltYWdl", "label": "X"}]}, 422,
         "imageLabelPairs[0].image: not an image (unrecognised format)"),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "{hugo}", "label": "a/b"}]}, 422,
         '[{"type": "value_error", "loc": "body.imageLabelPairs[0].label", "msg": "Value error, label must not '
         'contain \'/\', \'+\', \'#\' or control characters (it becomes an MQTT topic level)"}]'),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "{hugo}", "label": "  "}]}, 422,
         '[{"type": "value_error", "loc": "body.imageLabelPairs[0].label", "msg": "Value error, label is blank"}]'),
        ("/face-recognition-index-build", {"imageLabelPairs": [{"image": "{hugo}", "label": "x"}] * 3}, 413,
         "3 images in one request; at most 2 (http.max_images_per_request)"),
        ("/face-recognition-index-add", {"imageLabelPairs": [{"image": "{hugo}", "label": "x"}], "indexKey": "nope"},
         404, "indexKey 'nope' is unknown (never built, or forgotten: keys live in memory)"),
        ("/face-recognition-index-remove", {"ids": [0], "indexKey": "nope"},
         404, "indexKey 'nope' is unknown (never built, or forgotten: keys live in memory)"),
        ("/face-recognition-infer", {"image": "{hugo}", "indexKey": "nope"},
         404, "indexKey 'nope' is unknown (never built, or forgotten: keys live in memory)"),
        ("/face-recognition-infer", {"image": "{hugo}", "indexKey": "{key}", "topk": 0}, 422,
         '[{"type": "greater_than_equal", "loc": "body.topk", "msg": "Input should be greater than or equal to 1"}]'),
        ("/face-recognition-infer", {"image": "%%%", "indexKey": "{key}"}, 422,
         "image: neither an http(s) URL nor valid base64"),
    ],
    ids=["missing-pairs", "empty-pairs", "no-face", "two-faces", "not-image", "slash-in-label", "blank-label", "too-many",
         "add-unknown-key", "remove-unknown-key", "infer-unknown-key", "topk-zero", "bad-base64"],
)
def test_bad_requests_get_the_paddlex_error_envelope(built, faces_dir, photo, path, body, status, message):
    # given
    client, key = built
    images = {
        "{dog}": b64(faces_dir / "negatives" / "dlib" / "dog.jpg"),
        "{two}": b64(faces_dir / "group" / "ageitgey" / "two_people.jpg"),
        "{hugo}": b64(photo("Hugo_Chavez", 2)),
    }

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return images.get(value, key if value == "{key}" else value)

    # when
    response = client.post(path, json=fill(body))

    # then
    assert response.status_code == status
    assert response.json() == {"logId": response.json()["logId"], "errorCode": status, "errorMsg": message}


def test_two_faces_enrol_the_largest_when_configured(serve, faces_dir):
    # given
    client = serve(decision=DecisionSettings(multiple_faces="largest"))

    # when
    result = _ok(client.post("/face-recognition-index-build", json={
        "imageLabelPairs": [{"image": b64(faces_dir / "group" / "ageitgey" / "two_people.jpg"), "label": "Pair"}]}))

    # then
    assert result["imageCount"] == 1


def test_a_chunked_body_over_the_cap_is_413(serve):
    # given
    client = serve(HttpSettings(max_request_bytes=4096))

    def chunks() -> Iterator[bytes]:
        yield b'{"image": "'
        for _ in range(64):
            yield b"A" * 1024
        yield b'"}'

    # when
    response = client.post("/face-recognition-infer", content=chunks(), headers={"Content-Type": "application/json"})

    # then
    assert response.status_code == 413
    assert response.json()["errorMsg"] == "request body is larger than 4096 bytes (http.max_request_bytes)"

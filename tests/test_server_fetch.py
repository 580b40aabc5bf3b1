"""Request images: base64, and URLs fetched only from the allow-list (a real local HTTP server)."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest

from streamd.server.config import HttpSettings
from streamd.server.envelope import ApiError
from streamd.server.fetch import ImageLoader, UrlAllowList, is_url


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


JPEG = _jpeg()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves a few fixed routes; counts every request so tests can prove what was (not) fetched."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits.append(self.path)
        routes = {
            "/faces/ann.jpg": (200, {"Content-Type": "image/jpeg"}, JPEG),
            "/faces/big.jpg": (200, {"Content-Type": "image/jpeg"}, JPEG + b"\0" * 50_000),
            "/faces/to-ann": (302, {"Location": "/faces/ann.jpg"}, b""),
            "/faces/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/faces/to-private": (301, {"Location": "/private/key.jpg"}, b""),
            "/faces/loop": (302, {"Location": "/faces/loop"}, b""),
            "/faces/text": (200, {"Content-Type": "text/plain"}, b"hello, not an image"),
            "/private/key.jpg": (200, {"Content-Type": "image/jpeg"}, JPEG),
        }
        status, headers, body = routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def hits() -> list[str]:
    _Handler.hits = []
    return _Handler.hits


def _loader(origin: str, **kwargs) -> ImageLoader:
    return ImageLoader(HttpSettings(allowed_url_prefixes=[f"{origin}/faces/"], **kwargs))


# --------------------------------------------------------------------------- allow-list


PREFIXES = ["https://cdn.example/faces/", "http://127.0.0.1:8000/img"]


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://cdn.example/faces/a.jpg", True),
        ("https://cdn.example/faces/sub/a.jpg", True),
        ("https://CDN.example/faces/a.jpg", True),
        ("https://cdn.example:443/faces/a.jpg", True),
        ("http://127.0.0.1:8000/img", True),
        ("http://127.0.0.1:8000/img/a.jpg", True),
        ("https://cdn.example/facesX/a.jpg", False),
        ("https://cdn.example/other/a.jpg", False),
        ("http://cdn.example/faces/a.jpg", False),
        ("https://cdn.example:8443/faces/a.jpg", False),
        ("https://cdn.example.evil.net/faces/a.jpg", False),
        ("https://cdn.example@evil.net/faces/a.jpg", False),
        ("https://evil.net/https://cdn.example/faces/a.jpg", False),
        ("https://cdn.example/faces/../admin", False),
        ("https://cdn.example/faces/%2e%2e/admin", False),
        ("http://127.0.0.1:8000/img2", False),
        ("http://127.0.0.1:8000/imgs/a.jpg", False),
        ("http://127.0.0.1/img/a.jpg", False),
        ("http://localhost:8000/img/a.jpg", False),
    ],
)
def test_allow_list_compares_scheme_host_port_and_path(url, allowed):
    # given
    allow_list = UrlAllowList(PREFIXES)

    # then
    assert allow_list.allows(httpx.URL(url)) is allowed


@pytest.mark.parametrize(
    "value, url",
    [("http://x/a.jpg", True), ("HTTPS://x/a.jpg", True), ("file:///etc/passwd", False), ("/9j/4AAQSkZJRg==", False)],
)
def test_strings_are_urls_only_with_an_http_scheme_as_in_paddlex(value, url):
    assert is_url(value) is url


# --------------------------------------------------------------------------- base64


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(JPEG).decode(),
        "data:image/jpeg;base64," + base64.b64encode(JPEG).decode(),
        "\n".join(base64.encodebytes(JPEG).decode().split("\n")),
    ],
    ids=["plain", "data-uri", "wrapped-lines"],
)
def test_base64_images_decode_to_pixels(encoded):
    # when
    pixels = ImageLoader(HttpSettings()).load(encoded, where="image")

    # then
    assert pixels.shape == (48, 64, 3)
    assert pixels.dtype == np.uint8


@pytest.mark.parametrize(
    "value, status, message",
    [
        ("not base64!", 422, "image: neither an http(s) URL nor valid base64"),
        ("file:///etc/passwd", 422, "image: neither an http(s) URL nor valid base64"),
        (base64.b64encode(b"hello").decode(), 422, "image: not an image (unrecognised format)"),
        ("", 422, "image: empty file (0 bytes)"),
        (base64.b64encode(_jpeg(200, 100)).decode(), 422,
         "image: 200x100 = 20000 pixels is over the cap of 10000 (http.max_image_pixels)"),
    ],
    ids=["garbage", "file-url", "not-image", "empty", "over-pixel-cap"],
)
def test_bad_base64_images_are_refused_with_the_reason(value, status, message):
    # given
    loader = ImageLoader(HttpSettings(max_image_pixels=10_000))

    # when
    with pytest.raises(ApiError) as err:
        loader.load(value, where="image")

    # then
    assert (err.value.status, err.value.message) == (status, message)


# --------------------------------------------------------------------------- URLs


def test_an_allowed_url_is_fetched(origin, hits):
    # when
    pixels = _loader(origin).load(f"{origin}/faces/ann.jpg", where="image")

    # then
    assert pixels.shape == (48, 64, 3)
    assert hits == ["/faces/ann.jpg"]


def test_a_redirect_within_the_allow_list_is_followed(origin, hits):
    # when
    pixels = _loader(origin).load(f"{origin}/faces/to-ann", where="image")

    # then
    assert pixels.shape == (48, 64, 3)
    assert hits == ["/faces/to-ann", "/faces/ann.jpg"]


def test_urls_are_refused_when_no_prefix_is_allowed(origin, hits):
    # given
    loader = ImageLoader(HttpSettings())

    # when
    with pytest.raises(ApiError) as err:
        loader.load(f"{origin}/faces/ann.jpg", where="imageLabelPairs[0].image")

    # then
    assert (err.value.status, err.value.message) == (
        403, "imageLabelPairs[0].image: image URLs are refused; send base64 or set http.allowed_url_prefixes"
    )
    assert hits == []


@pytest.mark.parametrize(
    "path, status, message, fetched",
    [
        ("/private/key.jpg", 403, "image: URL {origin}/private/key.jpg is not in http.allowed_url_prefixes", []),
        ("/faces/to-metadata", 403,
         "image: URL http://169.254.169.254/latest/meta-data/ is not in http.allowed_url_prefixes", ["/faces/to-metadata"]),
        ("/faces/to-private", 403, "image: URL {origin}/private/key.jpg is not in http.allowed_url_prefixes",
         ["/faces/to-private"]),
        ("/faces/loop", 502, "image: more than 3 redirects (http.max_redirects)", ["/faces/loop"] * 4),
        ("/faces/missing.jpg", 502, "image: fetching {origin}/faces/missing.jpg gave HTTP 404", ["/faces/missing.jpg"]),
        ("/faces/big.jpg", 413, "image: {origin}/faces/big.jpg is larger than 20000 bytes (http.max_download_bytes)",
         ["/faces/big.jpg"]),
        ("/faces/text", 422, "image: not an image (unrecognised format)", ["/faces/text"]),
    ],
    ids=["off-list", "redirect-to-metadata", "redirect-off-list", "redirect-loop", "404", "too-big", "not-image"],
)
def test_url_failures_are_refused_and_nothing_off_the_list_is_fetched(origin, hits, path, status, message, fetched):
    # given
    loader = _loader(origin, max_download_bytes=20_000)

    # when
    with pytest.raises(ApiError) as err:
        loader.load(f"{origin}{path}", where="image")

    # then
    assert (err.value.status, err.value.message) == (status, message.format(origin=origin))
    assert hits == fetched
    assert "/private/key.jpg" not in hits


def test_an_unreachable_allowed_host_is_502_without_the_query_string(hits):
    # given: nothing listens on port 9 (discard) of loopback
    loader = ImageLoader(HttpSettings(allowed_url_prefixes=["http://127.0.0.1:9/"], url_timeout_s=2))

    # when
    with pytest.raises(ApiError) as err:
        loader.load("http://127.0.0.1:9/a.jpg?signature=SECRET", where="image")

    # then
    assert (err.value.status, err.value.message) == (502, "image: fetching http://127.0.0.1:9/a.jpg failed (ConnectError)")

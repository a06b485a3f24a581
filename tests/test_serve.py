"""The HTTP service on the toy world: every endpoint, every error status, queue, auth, URL policy."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tagseg import toy
from tagseg.pipeline import TAG
from tagseg.masks import rle_to_mask
from tagseg.serve import ServeSettings, create_app
from tagseg.serve.fetch import address_is_public, host_allowed

PATIENCE_S = 300.0
"""How long a test waits for a thread or server to get somewhere: each wait ends as soon as it
gets there, so only a hang takes this long, however busy the machine."""


def toy_tag(tag_class: type[TAG] = TAG, **overrides: Any) -> TAG:
    """A small, fast toy pipeline (its own in-memory database)."""
    settings = {"image_size": 128, "crf": False, "kmeans_restarts": 2, **overrides}
    base = TAG.from_pretrained("toy", **settings)
    return tag_class(base.features, base.embedder, base.text_encoder, toy.toy_database(base.text_encoder), base.config)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1, on a port the OS picks, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(PATIENCE_S)
        sock.close()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return toy.toy_scene(5, size=(120, 160))


@pytest.fixture(scope="module")
def image(scene: tuple[np.ndarray, np.ndarray, list[str]]) -> bytes:
    return png_bytes(scene[0])


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(toy_tag(), ServeSettings())) as test_client:
        yield test_client


def upload(client: TestClient, data: bytes, **fields: Any) -> Any:
    return client.post("/v1/segment", files={"image": ("scene.png", data, "image/png")}, data=fields)


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


class ImageServer:
    """A loopback HTTP server: ``/image.png``, ``/redirect`` (to ``localhost``), ``/missing``."""

    def __init__(self, body: bytes, required_header: tuple[str, str] | None = None) -> None:
        outer = self
        self.requests: list[tuple[str, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append((self.path, dict(self.headers)))
                if required_header and self.headers.get(required_header[0]) != required_header[1]:
                    self.send_response(401)
                    self.end_headers()
                elif self.path.split("?")[0] in ("/image.png", "/data/upload/1/scene.png"):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{outer.port}/image.png")
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------ segmentation
def test_segment_upload_returns_the_cli_json_with_masks_and_pictures(
    client: TestClient, scene: tuple[np.ndarray, np.ndarray, list[str]], image: bytes
) -> None:
    response = upload(client, image, formats="overlay,labels")
    assert response.status_code == 200, response.text
    body = response.json()
    height, width = scene[0].shape[:2]
    assert body["image"] == {"height": height, "width": width}
    assert set(body["models"]) == {"features", "embedder", "text_encoder"}
    assert body["segments"], "the toy scene has named segments"
    covered = np.zeros((height, width), dtype=int)
    for segment in body["segments"]:
        assert {"label", "score", "bbox", "candidates", "retrieved", "rle"} <= set(segment)
        covered += rle_to_mask(segment["rle"])
    assert (covered == 1).all(), "segments tile the image"
    assert {s["label"] for s in body["segments"]} <= set(toy.PALETTE)
    for key in ("overlay_png", "label_png"):
        picture = Image.open(io.BytesIO(base64.b64decode(body[key])))
        assert picture.size == (width, height)


def test_segment_json_base64_with_settings_and_no_masks(client: TestClient, image: bytes) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(image).decode()
    response = client.post(
        "/v1/segment", json={"image_base64": data_uri, "k": 3, "top_k": 5, "masks": False, "names": "phrases"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["settings"]["num_clusters"] == 3 and body["settings"]["top_k"] == 5
    assert body["settings"]["names"] == "phrases"
    assert 1 <= len(body["segments"]) <= 3
    assert all("rle" not in s and len(s["retrieved"]) <= 5 for s in body["segments"])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"image_base64": "aGVsbG8=", "colour": "red"}, 422, "unknown_field"),
        ({"image_base64": "aGVsbG8="}, 415, "not_an_image"),
        ({"image_base64": "@@@"}, 422, "invalid_base64"),
        ({}, 422, "invalid_request"),
        ({"image_base64": "aGVsbG8=", "image_url": "https://example.com/x.png"}, 422, "invalid_request"),
        ({"image_base64": "aGVsbG8=", "k": 0}, 422, "invalid_request"),
        ({"image_base64": "aGVsbG8=", "names": "sentences"}, 422, "invalid_request"),
        ({"image_base64": "aGVsbG8=", "formats": ["pdf"]}, 422, "invalid_request"),
        ([1, 2], 422, "invalid_request"),
    ],
)
def test_segment_json_errors(client: TestClient, payload: Any, status: int, code: str) -> None:
    assert_error(client.post("/v1/segment", json=payload), status, code)


def test_segment_upload_errors(client: TestClient, image: bytes) -> None:
    assert_error(upload(client, b"just some text, not pixels"), 415, "not_an_image")
    assert_error(upload(client, image[: len(image) // 2]), 422, "corrupt_image")
    assert_error(upload(client, image, colour="red"), 422, "unknown_field")
    assert_error(upload(client, image, k="many"), 422, "invalid_request")
    assert_error(client.post("/v1/segment", data={"k": "3"}), 422, "missing_image")
    assert_error(client.post("/v1/segment", content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(client.post("/v1/segment", content=b"{nope", headers={"content-type": "application/json"}), 400, "invalid_json")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/v1/segment"), 405, "method_not_allowed")


def test_size_and_pixel_limits_answer_413(image: bytes) -> None:
    settings = ServeSettings(max_upload_bytes=len(image) - 1)
    with TestClient(create_app(toy_tag(max_pixels=100), settings)) as small:
        assert_error(upload(small, image), 413, "image_too_large")
        assert_error(upload(small, image[:1000]), 413, "too_many_pixels")
        assert_error(small.post("/v1/segment", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"}), 413, "payload_too_large")
        height, width = 120, 160
        pixels = upload(small, image[:1000]).json()["error"]["message"]
        assert f"{width}x{height} = {width * height:,} pixels" in pixels and "limit is 100 " in pixels


def test_body_limit_message_gives_the_configured_image_limit() -> None:
    with TestClient(create_app(toy_tag(), ServeSettings(max_upload_bytes=20 * 1024 * 1024))) as client:
        response = client.post("/v1/segment", content=b"x" * 29_010_603, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert "images of up to 20,971,520 bytes (20 MB" in response.json()["error"]["message"]


def test_a_repeated_parameter_is_refused(client: TestClient, image: bytes) -> None:
    assert_error(client.get("/v1/database/search", params=[("q", "red"), ("k", "3"), ("k", "50")]), 422, "repeated_parameter")
    repeated = client.post("/v1/segment", files={"image": ("s.png", image, "image/png")}, data={"k": ["2", "9"]})
    assert_error(repeated, 422, "repeated_field")


# ---------------------------------------------------------------------------- service endpoints
def test_health_info_metrics_and_openapi(client: TestClient, image: bytes) -> None:
    assert upload(client, image).status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"]
    info = client.get("/v1/info").json()
    assert info["models"]["features"] == "tagseg/toy-features"
    assert info["database"]["kind"] == "InMemoryTextDatabase" and info["database"]["size"] > 0
    assert info["settings"]["image_size"] == 128 and info["version"]
    assert info["service"]["database_writes"] is False
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'tagseg_requests_total{method="POST",route="/v1/segment",status="200"}' in text
    assert "tagseg_request_duration_seconds_bucket{le=\"+Inf\"}" in text
    assert "tagseg_queue_depth 0" in text
    processed = next(line for line in text.splitlines() if line.startswith("tagseg_images_processed_total"))
    assert int(processed.split()[1]) >= 1
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert body["application/json"]["examples"]
    assert {"/v1/info", "/v1/database/add", "/predict", "/setup", "/webhook", "/metrics"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_page_and_its_assets_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    for path in ("/", "/static/app.js", "/static/style.css"):
        response = client.get(path)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text, f"{path} must not load from a CDN"
    icon = client.get("/favicon.ico")  # asked for by browsers whatever the page links: no 404 in their logs
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    from xml.etree import ElementTree

    assert ElementTree.fromstring(icon.content).tag == "{http://www.w3.org/2000/svg}svg"
    assert 'rel="icon"' in page.text and client.get("/static/favicon.svg").content == icon.content


# --------------------------------------------------------------------------------- queue, timeouts
class GatedTAG(TAG):
    """A toy TAG whose calls wait for a gate, so tests decide when workers finish."""

    gate = threading.Event()

    def __call__(self, image: Any) -> Any:
        assert self.gate.wait(PATIENCE_S)
        return super().__call__(image)


def _wait_for(condition: Any, seconds: float = PATIENCE_S) -> None:
    deadline = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        deadline.wait(0.01)
    raise AssertionError("condition not reached")


def test_full_queue_answers_429_with_retry_after_and_recovers(image: bytes) -> None:
    GatedTAG.gate = threading.Event()
    app = create_app(toy_tag(GatedTAG), ServeSettings(workers=1, queue_size=1, retry_after=7))
    queue = app.state.service.queue
    with TestClient(app) as gated:
        answers: list[int] = []
        first = threading.Thread(target=lambda: answers.append(upload(gated, image).status_code))
        first.start()
        _wait_for(lambda: queue.running == 1)
        second = threading.Thread(target=lambda: answers.append(upload(gated, image).status_code))
        second.start()
        _wait_for(lambda: queue.depth == 1)
        refused = upload(gated, image)
        assert_error(refused, 429, "queue_full")
        assert refused.headers["retry-after"] == "7"
        assert "tagseg_queue_depth 1" in gated.get("/metrics").text
        GatedTAG.gate.set()
        first.join(PATIENCE_S)
        second.join(PATIENCE_S)
        assert answers == [200, 200]
        assert gated.get("/health").json()["queue"] == {"running": 0, "waiting": 0}
        assert upload(gated, image).status_code == 200
        assert 'status="429"} 1' in gated.get("/metrics").text


def test_request_timeout_answers_504(image: bytes) -> None:
    GatedTAG.gate = threading.Event()
    app = create_app(toy_tag(GatedTAG), ServeSettings(request_timeout=0.2))
    with TestClient(app) as slow:
        assert_error(upload(slow, image), 504, "timeout")
        GatedTAG.gate.set()
        _wait_for(lambda: app.state.service.queue.running == 0)
        assert slow.get("/health").json()["status"] == "UP"


# ------------------------------------------------------------------------------------- database
def test_database_writes_are_off_unless_enabled(client: TestClient) -> None:
    assert_error(client.post("/v1/database/add", json={"texts": ["red kite"]}), 403, "database_writes_disabled")
    hits = client.get("/v1/database/search", params={"q": "red", "k": 3}).json()["hits"]
    assert len(hits) == 3 and all("red" in h["text"] for h in hits)


def test_database_token_and_changes_visible_in_the_next_request(image: bytes) -> None:
    settings = ServeSettings(database_writes=True, token="s3cret")
    with TestClient(create_app(toy_tag(), settings)) as writable:
        texts = {"texts": ["a red zebra crossing", "red zebra stripes"]}
        missing = writable.post("/v1/database/add", json=texts)
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(writable.post("/v1/database/add", json=texts, headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        auth = {"Authorization": "Bearer s3cret"}
        assert_error(writable.post("/v1/database/add", json={"texts": ["x"], "tags": []}, headers=auth), 422, "invalid_request")

        before = upload(writable, image, masks="false").json()["segments"]
        red = next(s for s in before if s["label"] == "red")
        assert not any("zebra" in r["text"] for r in red["retrieved"])
        added = writable.post("/v1/database/add", json=texts, headers=auth).json()
        assert added["added"] == 2
        after = upload(writable, image, masks="false").json()["segments"]
        red = next(s for s in after if s["label"] == "red")
        assert {"a red zebra crossing", "red zebra stripes"} <= {r["text"] for r in red["retrieved"]}
        assert "zebra" in [c["name"] for c in red["candidates"]]

        removed = writable.post("/v1/database/remove", json={"texts": ["red zebra stripes"]}, headers=auth).json()
        assert removed["removed"] == 1 and removed["size"] == added["size"] - 1
        again = upload(writable, image, masks="false").json()["segments"]
        red = next(s for s in again if s["label"] == "red")
        assert "red zebra stripes" not in {r["text"] for r in red["retrieved"]}
        everything = toy.toy_captions() + ["a red zebra crossing"]
        assert_error(writable.post("/v1/database/remove", json={"texts": everything}, headers=auth), 409, "database_error")


# ----------------------------------------------------------------------------------- URL fetching
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/image.png",
        "http://localhost:9/image.png",
        "http://[::1]:9/image.png",
        "http://[::ffff:127.0.0.1]:9/image.png",
        "http://10.1.2.3/image.png",
        "http://192.168.0.10/image.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:9/image.png",
        "file:///etc/passwd",
        "ftp://example.com/image.png",
        "http://user:pw@example.com/image.png",
        "http://[::1/x.png",
        "http://example.com:99999/x.png",
    ],
)
def test_url_fetch_refuses_private_loopback_and_other_schemes(client: TestClient, url: str) -> None:
    assert_error(client.post("/v1/segment", json={"image_url": url}), 400, "url_refused")


def test_url_fetch_follows_the_allow_list_on_every_hop(image: bytes) -> None:
    with ImageServer(image) as server:
        allowed = ServeSettings(allow_private=True, allow_hosts=("127.0.0.1",))
        with TestClient(create_app(toy_tag(), allowed)) as fetching:
            response = fetching.post("/v1/segment", json={"image_url": f"{server.url}/image.png", "masks": False})
            assert response.status_code == 200, response.text
            assert response.json()["segments"]
            assert_error(fetching.post("/v1/segment", json={"image_url": f"{server.url}/redirect"}), 400, "url_refused")
            assert_error(fetching.post("/v1/segment", json={"image_url": f"{server.url}/missing"}), 502, "url_fetch_failed")
        small = ServeSettings(allow_private=True, max_upload_bytes=len(image) // 2)
        with TestClient(create_app(toy_tag(), small)) as limited:
            assert_error(limited.post("/v1/segment", json={"image_url": f"{server.url}/image.png"}), 413, "image_too_large")
        fetched_paths = [path for path, _ in server.requests]
        assert "/missing" in fetched_paths and fetched_paths.count("/redirect") == 1


def test_host_allow_list_and_public_addresses() -> None:
    assert host_allowed("anything.org", ())
    assert host_allowed("images.example.com", ("*.example.com",))
    assert host_allowed("Example.COM.", ("example.com",))
    assert not host_allowed("example.com.evil.org", ("example.com", "*.example.com"))
    assert not host_allowed("badexample.com", ("*.example.com",))
    assert address_is_public("93.184.216.34")
    assert address_is_public("2606:2800:220:1:248:1893:25c8:1946")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1", "0.0.0.0"):
        assert not address_is_public(address), address


def test_persistent_database_changes_on_disk_and_the_cached_default_is_read_only(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagseg.database import PersistentTextDatabase

    encoder = toy.ToyTextEncoder()
    database = PersistentTextDatabase.create(tmp_path / "db", model_id=encoder.model_id, dim=encoder.dim)
    database.add_texts(toy.toy_captions(), encoder)
    tag = TAG.from_pretrained("toy", database=database, image_size=128, crf=False)
    with TestClient(create_app(tag, ServeSettings(database_writes=True))) as writable:
        assert writable.post("/v1/database/add", json={"texts": ["a red zebra crossing"]}).json()["added"] == 1
        hits = writable.get("/v1/database/search", params={"q": "red zebra crossing", "k": 1}).json()["hits"]
        assert hits[0]["text"] == "a red zebra crossing"
        assert PersistentTextDatabase.open(tmp_path / "db").contains("a red zebra crossing")
        monkeypatch.setattr("tagseg.serve.database.default_database_path", lambda encoder: tmp_path / "db")
        assert_error(writable.post("/v1/database/add", json={"texts": ["x"]}), 409, "database_read_only")
        assert writable.get("/v1/info").json()["service"]["database_writes"] is False


def test_a_waiting_database_change_goes_before_later_segmentations() -> None:
    from tagseg.serve.database import ReadWriteLock

    lock, order = ReadWriteLock(), []
    first_reader = lock.reading()
    first_reader.__enter__()

    def write() -> None:
        with lock.writing():
            order.append("write")

    def read() -> None:
        with lock.reading():
            order.append("read")

    writer = threading.Thread(target=write)
    writer.start()
    _wait_for(lambda: lock._writers_waiting == 1)
    reader = threading.Thread(target=read)
    reader.start()
    threading.Event().wait(0.05)
    assert order == []
    first_reader.__exit__(None, None, None)
    writer.join(PATIENCE_S)
    reader.join(PATIENCE_S)
    assert order == ["write", "read"]


def test_an_unexpected_failure_still_answers_the_json_error_shape(image: bytes) -> None:
    class BrokenTAG(TAG):
        def __call__(self, image):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug")

    with TestClient(create_app(toy_tag(BrokenTAG), ServeSettings()), raise_server_exceptions=False) as broken:
        response = broken.post("/v1/segment", files={"image": ("scene.png", image, "image/png")})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text

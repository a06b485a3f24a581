"""The Label Studio ML backend: protocol payloads in Label Studio's documented format, brush RLE."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serve import ImageServer, assert_error, png_bytes, toy_tag

from tagseg import toy
from tagseg.serve import ServeSettings, create_app
from tagseg.masks import mask_to_brush_rle, rle_pack
from tagseg.serve.labelstudio import parse_label_config

COLOURS = "".join(f'<Label value="{name.title()}"/>' for name in toy.PALETTE)
MAPPED_CONFIG = f"""<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">{COLOURS}</BrushLabels>
</View>"""
OBJECT_CONFIG = """<View><Image name="img" value="$photo"/>
  <BrushLabels name="objects" toName="img"><Label value="Car"/><Label value="Tree"/></BrushLabels></View>"""
DYNAMIC_CONFIG = """<View><Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image" value="$labels"/></View>"""


def rle_unpack(data: list[int]) -> np.ndarray:
    """Decoder written from the rle-pack format description (independent of the encoder)."""
    bits = "".join(f"{byte:08b}" for byte in data)
    position = 0

    def read(count: int) -> int:
        nonlocal position
        value = int(bits[position : position + count], 2)
        position += count
        return value

    total = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    values: list[int] = []
    while len(values) < total:
        repeated = read(1)
        count = read(sizes[read(2)]) + 1
        if repeated:
            values.extend([read(word)] * count)
        else:
            values.extend(read(word) for _ in range(count))
    assert len(values) == total and len(bits) - position < 8 + word
    return np.array(values)


def brush_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    rgba = rle_unpack(rle).reshape(height, width, 4)
    assert set(np.unique(rgba)) <= {0, 255}
    return rgba[:, :, 3] == 255


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (120, 160), (300, 400)])
def test_brush_rle_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    blob = np.zeros(shape, dtype=bool)
    blob[shape[0] // 4 : 3 * shape[0] // 4 + 1, shape[1] // 3 :] = True
    for mask in (np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) > 0.5, blob):
        assert (brush_to_mask(mask_to_brush_rle(mask), *shape) == mask).all()


def test_rle_pack_literals_long_runs_and_header() -> None:
    values = np.array([1, 2, 3, 3, 3, *([7] * 70_000), 9], dtype=np.uint8)
    packed = list(rle_pack(values))
    assert (rle_unpack(packed) == values).all()
    # 32-bit count, word size 8 - 1, field sizes 3, 4, 8, 16 (each minus one) as Label Studio writes them.
    assert packed[:4] == list(len(values).to_bytes(4, "big"))
    assert f"{packed[4]:08b}{packed[5]:08b}{packed[6]:08b}"[:21] == "00111" + "0010" + "0011" + "0111" + "1111"


def test_label_config_parsing() -> None:
    target = parse_label_config(OBJECT_CONFIG)
    assert (target.from_name, target.to_name, target.data_key, target.labels) == ("objects", "img", "photo", ("Car", "Tree"))
    assert parse_label_config(DYNAMIC_CONFIG).labels == ()
    with pytest.raises(Exception, match="BrushLabels"):
        parse_label_config('<View><Image name="i" value="$i"/></View>')


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return toy.toy_scene(5, size=(120, 160))


@pytest.fixture(scope="module")
def server(scene: tuple[np.ndarray, np.ndarray, list[str]]) -> Any:
    with ImageServer(png_bytes(scene[0])) as image_server:
        yield image_server


def predict(client: TestClient, config: str, data: dict[str, str], **extra: Any) -> Any:
    payload = {"tasks": [{"id": 7, "data": data}], "label_config": config, "project": "3.1712345678", "params": {"context": None}}
    return client.post("/predict", json={**payload, **extra})


def test_predict_maps_names_onto_project_labels(server: ImageServer, scene: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    tag = toy_tag()
    expected = tag(scene[0])
    with TestClient(create_app(tag, ServeSettings(allow_private=True, model_version="toy-1"))) as client:
        assert client.get("/health").json()["status"] == "UP"
        response = predict(client, MAPPED_CONFIG, {"image": f"{server.url}/image.png"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "toy-1"
        (prediction,) = body["results"]
        assert prediction["model_version"] == "toy-1" and 0 < prediction["score"] <= 1
        regions = prediction["result"]
        assert {r["value"]["brushlabels"][0] for r in regions} == {s.label.title() for s in expected.segments}
        for region in regions:
            assert region["type"] == "brushlabels" and region["from_name"] == "tag" and region["to_name"] == "image"
            assert region["value"]["format"] == "rle" and 0 < region["score"] <= 1
            assert (region["original_height"], region["original_width"]) == expected.image_size
            segment = next(s for s in expected.segments if s.label.title() == region["value"]["brushlabels"][0])
            assert (brush_to_mask(region["value"]["rle"], *expected.image_size) == segment.mask).all()


def test_free_names_abstention_and_aliases(server: ImageServer) -> None:
    url = f"{server.url}/image.png"
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True))) as client:
        free = predict(client, DYNAMIC_CONFIG, {"image": url}).json()["results"][0]["result"]
        free_names = {r["value"]["brushlabels"][0] for r in free}
        assert free_names and free_names <= set(toy.PALETTE)
        abstained = predict(client, OBJECT_CONFIG, {"photo": url}).json()["results"][0]
        assert abstained["result"] == []
    aliases = {name: "Car" for name in free_names}
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True, label_aliases=aliases))) as client:
        aliased = predict(client, OBJECT_CONFIG, {"photo": url}).json()["results"][0]["result"]
        assert [r["value"]["brushlabels"] for r in aliased] == [["Car"]]
        assert brush_to_mask(aliased[0]["value"]["rle"], 120, 160).all(), "all segments merged into one region"
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True, label_mode="free"))) as client:
        forced = predict(client, OBJECT_CONFIG, {"photo": url}).json()["results"][0]["result"]
        assert {r["value"]["brushlabels"][0] for r in forced} == free_names


def test_names_map_onto_the_most_similar_label(server: ImageServer) -> None:
    labels = "".join(f'<Label value="{name} object"/>' for name in toy.PALETTE)
    config = f'<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">{labels}</BrushLabels></View>'
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True))) as client:
        free = predict(client, DYNAMIC_CONFIG, {"image": f"{server.url}/image.png"}).json()["results"][0]["result"]
        mapped = predict(client, config, {"image": f"{server.url}/image.png"}).json()["results"][0]["result"]
    assert [r["value"]["brushlabels"][0] for r in mapped] == [f"{r['value']['brushlabels'][0]} object" for r in free]
    assert [r["value"]["rle"] for r in mapped] == [r["value"]["rle"] for r in free]


def assert_task_error(response: Any, code: str) -> None:
    """A batch that answers 200 with the one task's failure reported in its place."""
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    assert "result" not in entry and entry["task"] == 7
    assert entry["error"]["code"] == code and entry["error"]["message"]


def test_images_from_label_studio_data_paths_with_the_api_key(scene: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    with ImageServer(png_bytes(scene[0]), required_header=("Authorization", "Token ls-key")) as label_studio:
        settings = ServeSettings(label_studio_url=label_studio.url + "/", label_studio_api_key="ls-key")
        with TestClient(create_app(toy_tag(), settings)) as client:
            response = predict(client, DYNAMIC_CONFIG, {"image": "/data/upload/1/scene.png"})
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["result"]
            assert_task_error(predict(client, DYNAMIC_CONFIG, {"image": "s3://bucket/x.png"}), "invalid_task")
        assert label_studio.requests[0][0] == "/data/upload/1/scene.png"
    with TestClient(create_app(toy_tag(), ServeSettings())) as client:
        assert_task_error(predict(client, DYNAMIC_CONFIG, {"image": "/data/upload/1/scene.png"}), "label_studio_url_missing")
        assert_task_error(predict(client, DYNAMIC_CONFIG, {"image": "http://127.0.0.1:9/x.png"}), "url_refused")


def test_setup_remembers_the_project_config_and_webhook_ignores_events(server: ImageServer) -> None:
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True))) as client:
        setup = client.post("/setup", json={"project": "3.1712345678", "schema": DYNAMIC_CONFIG, "hostname": "http://localhost:8080", "access_token": "x", "model_version": None})
        assert setup.status_code == 200 and setup.json()["model_version"]
        payload = {"tasks": [{"id": 1, "data": {"image": f"{server.url}/image.png"}}], "project": "3.1712349999"}
        assert client.post("/predict", json=payload).json()["results"][0]["result"]
        assert_error(client.post("/predict", json={**payload, "project": "4.1"}), 422, "invalid_request")
        assert_error(client.post("/setup", json={"project": "5.1", "schema": "<View>"}), 422, "invalid_label_config")
        assert_error(client.post("/predict", json={"tasks": "nope", "label_config": DYNAMIC_CONFIG}), 422, "invalid_request")
        hook = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 1}})
        assert hook.status_code == 201 and hook.json()["status"] == "ignored"


POLYGON_CONFIG = """<View><Image name="image" value="$image"/>
  <PolygonLabels name="outline" toName="image"/></View>"""


def test_one_failing_task_leaves_the_others_their_predictions(server: ImageServer) -> None:
    tasks = [
        {"id": 1, "data": {"image": f"{server.url}/image.png"}},
        {"id": 2, "data": {"image": f"{server.url}/missing"}},
        {"id": 3, "data": {"image": f"{server.url}/image.png"}},
    ]
    with TestClient(create_app(toy_tag(), ServeSettings(allow_private=True))) as client:
        response = client.post("/predict", json={"tasks": tasks, "label_config": DYNAMIC_CONFIG, "project": "3.1"})
    assert response.status_code == 200, response.text
    first, failed, third = response.json()["results"]
    assert first["result"] and third["result"] == first["result"]
    assert failed == {"task": 2, "error": {"code": "url_fetch_failed", "message": "The image URL answered HTTP 404."}}


def test_polygon_labels_get_polygons_that_fill_back_to_the_segments(
    server: ImageServer, scene: tuple[np.ndarray, np.ndarray, list[str]]
) -> None:
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_fill_holes

    tag = toy_tag()
    expected = {s.label: s.mask for s in tag(scene[0]).segments}
    height, width = scene[0].shape[:2]
    with TestClient(create_app(tag, ServeSettings(allow_private=True))) as client:
        response = predict(client, POLYGON_CONFIG, {"image": f"{server.url}/image.png"})
    assert response.status_code == 200, response.text
    regions = response.json()["results"][0]["result"]
    drawn: dict[str, np.ndarray] = {}
    for region in regions:
        assert region["type"] == "polygonlabels" and region["from_name"] == "outline" and region["value"]["closed"]
        (label,) = region["value"]["polygonlabels"]
        points = [(x / 100 * width - 0.5, y / 100 * height - 0.5) for x, y in region["value"]["points"]]
        assert len(points) >= 3 and all(0 <= x < width and 0 <= y < height for x, y in points)
        canvas = Image.fromarray(drawn.get(label, np.zeros((height, width), dtype=bool)).astype(np.uint8) * 255)
        ImageDraw.Draw(canvas).polygon(points, fill=255, outline=255)
        drawn[label] = np.asarray(canvas) > 0
    assert set(drawn) == set(expected)
    for label, mask in drawn.items():
        outline = binary_fill_holes(expected[label])  # Label Studio's polygons have no holes
        iou = (mask & outline).sum() / (mask | outline).sum()
        assert iou > 0.9, (label, iou)


def test_the_backend_keeps_a_bounded_number_of_label_spaces_and_project_configs() -> None:
    from tagseg.serve.labelstudio import LabelStudioBackend, LabelTarget
    from tagseg.serve.service import Service

    service = Service(toy_tag(), ServeSettings(label_mode="map"))
    try:
        backend = LabelStudioBackend(service)
        backend.label_spaces.size = 2  # a small bound for the test
        targets = [LabelTarget("tag", "image", "image", (f"label {i}", "Car")) for i in range(3)]
        first = backend.label_space(targets[0])
        assert backend.label_space(targets[0]) is first  # the labels' embeddings are reused
        for target in targets[1:]:
            backend.label_space(target)
        assert list(backend.label_spaces) == ["label 1\nCar", "label 2\nCar"]  # the oldest went first
        assert backend.label_space(targets[0]) is not first
        for project in range(backend.MAX_PROJECTS + 5):
            backend.setup({"project": f"{project}.1712345678", "schema": MAPPED_CONFIG})
        assert len(backend.project_configs) == backend.MAX_PROJECTS and "0" not in backend.project_configs
    finally:
        service.queue.shutdown()

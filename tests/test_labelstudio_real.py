"""A real Label Studio (from PyPI, in its own environment) with ``tagseg serve --preset toy`` as its ML backend.

Run with ``TAGSEG_LABEL_STUDIO=/path/to/ls-venv python -m pytest -m labelstudio`` (``.ci/run``
installs Label Studio there); skipped when that environment is not given. Label Studio runs on
loopback with a temporary data dir and SQLite. Predictions are read back through Label Studio's
API and their brush masks decoded with Label Studio's own decoder
(``label_studio_sdk.converter.brush.decode_rle``, run in Label Studio's environment).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tagseg import toy

pytestmark = pytest.mark.labelstudio

LS_ENV = os.environ.get("TAGSEG_LABEL_STUDIO")
if not LS_ENV or not (Path(LS_ENV) / "bin" / "label-studio").exists():
    pytest.skip("set TAGSEG_LABEL_STUDIO to a virtual environment with label-studio installed", allow_module_level=True)

LEGACY_TOKEN = secrets.token_hex(20)
PATIENCE_S = 600.0
"""How long the test waits for a server to come up or for Label Studio to show a change. Each wait
ends as soon as its condition holds, so only a hang takes this long, however busy the machine."""
SIZE = (96, 128)
BRUSH_CONFIG = """<View><Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">{labels}</BrushLabels></View>"""
POLYGON_CONFIG = """<View><Image name="image" value="$image"/>
  <PolygonLabels name="outline" toName="image">{labels}</PolygonLabels></View>"""
FREE_CONFIG = """<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image"/></View>"""
PALETTE_LABELS = "".join(f'<Label value="{name}"/>' for name in toy.PALETTE)

DECODER = """
import json, sys
import numpy as np
from label_studio_sdk.converter.brush import decode_rle
regions = json.load(sys.stdin)
masks = {}
for key, (rle, height, width) in regions.items():
    masks[key] = np.reshape(decode_rle(rle), (height, width, 4))[:, :, 3] > 0
np.savez_compressed(sys.argv[1], **masks)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen, log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not come up in {limit:g} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(toy.toy_scene(seed, size=SIZE)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("label-studio")
    files = root / "files" / "scenes"
    files.mkdir(parents=True)
    for seed in (11, 12):
        (files / f"scene{seed}.png").write_bytes(png(seed))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # tagseg listens on loopback: Label Studio blocks that for the backend and for its webhook
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root / "files"),
        "DJANGO_DB": "sqlite",
    }
    log = root / "label-studio.log"
    command = [
        str(Path(LS_ENV) / "bin" / "label-studio"), "start", "--no-browser", "--data-dir", str(root / "data"),
        "--internal-host", "127.0.0.1", "--port", str(port), "--host", url,
        "--username", "tester@example.com", "--password", secrets.token_hex(8), "--user-token", LEGACY_TOKEN,
        "--enable-legacy-api-token",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"{url}/health", process, log, PATIENCE_S)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Token {LEGACY_TOKEN}"}, timeout=PATIENCE_S)
        created = client.post("/api/token/")
        assert created.status_code == 201, created.text
        yield {"url": url, "client": client, "pat": created.json()["token"], "files": files, "log": log}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def backends(label_studio: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two ``tagseg serve --preset toy``: one with the personal access token, one with the legacy token."""
    root = tmp_path_factory.mktemp("tagseg")
    started = {}
    for kind, key in (("personal", label_studio["pat"]), ("legacy", LEGACY_TOKEN)):
        port = free_port()
        log = root / f"{kind}.log"
        command = [
            str(Path(sys.executable).parent / "tagseg"), "serve", "--preset", "toy", "--port", str(port),
            "--label-studio-url", label_studio["url"], "--label-studio-api-key", key,
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        started[kind] = {"url": f"http://127.0.0.1:{port}", "process": process, "log": log}
    try:
        for backend in started.values():
            wait_until_up(f"{backend['url']}/health", backend["process"], backend["log"], PATIENCE_S)
        yield started
    finally:
        for backend in started.values():
            stop(backend["process"])


def make_project(ls: dict[str, Any], title: str, config: str) -> int:
    response = ls["client"].post("/api/projects", json={"title": title, "label_config": config})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def upload(ls: dict[str, Any], project: int, seeds: tuple[int, ...]) -> None:
    files = [(f"file{seed}", (f"upload{seed}.png", png(seed), "image/png")) for seed in seeds]
    response = ls["client"].post(f"/api/projects/{project}/import", files=files)
    assert response.status_code == 201, response.text


def local_files(ls: dict[str, Any], project: int) -> None:
    storage = ls["client"].post(
        "/api/storages/localfiles",
        json={"project": project, "title": "scenes", "path": str(ls["files"]), "regex_filter": r".*\.png", "use_blob_urls": True},
    )
    assert storage.status_code == 201, storage.text
    synced = ls["client"].post(f"/api/storages/localfiles/{storage.json()['id']}/sync")
    assert synced.status_code == 200, synced.text


def connect_and_predict(ls: dict[str, Any], project: int, backend: dict[str, Any]) -> list[dict[str, Any]]:
    """Connect the backend, run "Retrieve predictions" on every task; the tasks with their predictions."""
    client = ls["client"]
    connected = client.post("/api/ml", json={"project": project, "url": backend["url"], "title": "tagseg"})
    assert connected.status_code == 201, connected.text
    action = client.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
        json={"selectedItems": {"all": True, "excluded": []}},
    )  # fmt: skip
    assert action.status_code == 200, action.text
    tasks = client.get("/api/tasks", params={"project": project, "page_size": 100}).json()["tasks"]
    predictions = client.get("/api/predictions/", params={"project": project}).json()
    for task in tasks:
        task["stored_predictions"] = [p for p in predictions if p["task"] == task["id"]]
    return tasks


def decode_brushes(tasks: list[dict[str, Any]], tmp_path: Path) -> dict[str, np.ndarray]:
    """Every brush region's mask, decoded by Label Studio's own decoder; keys ``task/region``."""
    regions = {
        f"{task['id']}/{number}": (region["value"]["rle"], region["original_height"], region["original_width"])
        for task in tasks
        for prediction in task["stored_predictions"]
        for number, region in enumerate(prediction["result"])
    }
    out = tmp_path / "masks.npz"
    subprocess.run([str(Path(LS_ENV) / "bin" / "python"), "-c", DECODER, str(out)], input=json.dumps(regions).encode(), check=True)
    with np.load(out) as masks:
        return {key: masks[key] for key in masks.files}


def assert_tiling(tasks: list[dict[str, Any]], masks: dict[str, np.ndarray]) -> None:
    for task in tasks:
        (prediction,) = task["stored_predictions"]
        covered = sum(masks[f"{task['id']}/{n}"].astype(int) for n in range(len(prediction["result"])))
        assert covered.shape == SIZE and (covered == 1).all(), f"task {task['id']}: masks tile the image"


def test_brush_project_with_uploads_and_local_files(
    label_studio: dict[str, Any], backends: dict[str, Any], tmp_path: Path
) -> None:
    project = make_project(label_studio, "brush", BRUSH_CONFIG.format(labels=PALETTE_LABELS))
    upload(label_studio, project, (1, 2))
    local_files(label_studio, project)
    tasks = connect_and_predict(label_studio, project, backends["personal"])
    kinds = sorted("local-files" if "/data/local-files/?d=" in t["data"]["image"] else "upload" for t in tasks)
    assert kinds == ["local-files", "local-files", "upload", "upload"], [t["data"] for t in tasks]
    assert all(len(task["stored_predictions"]) == 1 for task in tasks), "every task got a prediction"
    masks = decode_brushes(tasks, tmp_path)
    assert_tiling(tasks, masks)
    for task in tasks:
        for region in task["stored_predictions"][0]["result"]:
            assert region["value"]["brushlabels"][0] in toy.PALETTE and 0 < region["score"] <= 1


def test_free_project_gets_its_names_as_labels_and_a_bad_task_fails_alone(
    label_studio: dict[str, Any], backends: dict[str, Any], tmp_path: Path
) -> None:
    project = make_project(label_studio, "free", FREE_CONFIG)
    upload(label_studio, project, (3, 4))
    missing = label_studio["client"].post(
        f"/api/projects/{project}/import", json=[{"image": f"/data/upload/{project}/no-such-file.png"}]
    )
    assert missing.status_code == 201, missing.text
    tasks = connect_and_predict(label_studio, project, backends["legacy"])
    good = [task for task in tasks if "no-such-file" not in task["data"]["image"]]
    bad = [task for task in tasks if "no-such-file" in task["data"]["image"]]
    assert len(good) == 2 and len(bad) == 1
    assert all(len(task["stored_predictions"]) == 1 for task in good) and not bad[0]["stored_predictions"]
    assert_tiling(good, decode_brushes(good, tmp_path))
    names = {r["value"]["brushlabels"][0] for task in good for r in task["stored_predictions"][0]["result"]}
    assert names and names <= set(toy.PALETTE)
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        config = label_studio["client"].get(f"/api/projects/{project}").json()["label_config"]
        if all(f'value="{name}"' in config for name in names):
            break
        time.sleep(1)
    assert all(f'value="{name}"' in config for name in names), f"names {names} added as labels: {config}"
    log = backends["legacy"]["log"].read_text()
    # Label Studio answers 500 for a missing upload; tagseg's log gives the task and the reason.
    assert f"Label Studio task {bad[0]['id']} failed: 502 url_fetch_failed: The image URL answered HTTP 500" in log


def test_polygon_project(label_studio: dict[str, Any], backends: dict[str, Any]) -> None:
    project = make_project(label_studio, "polygon", POLYGON_CONFIG.format(labels=PALETTE_LABELS))
    upload(label_studio, project, (5, 6))
    tasks = connect_and_predict(label_studio, project, backends["legacy"])
    assert len(tasks) == 2 and all(len(task["stored_predictions"]) == 1 for task in tasks)
    for task in tasks:
        regions = task["stored_predictions"][0]["result"]
        assert regions
        for region in regions:
            assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"][0] in toy.PALETTE
            points = np.array(region["value"]["points"])
            assert points.shape[0] >= 3 and ((points >= 0) & (points <= 100)).all()

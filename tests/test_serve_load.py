"""A bounded load test on loopback: 200 requests from 20 concurrent clients against 2 workers."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from test_serve import png_bytes, served, toy_tag

from tagseg import toy
from tagseg.serve import ServeSettings, create_app

CLIENTS = 20
REQUESTS_PER_CLIENT = 10


def resident_mb() -> float:
    """This process's resident memory (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def hammer(url: str, image: bytes) -> list[tuple[int, float, dict]]:
    async def client(http: httpx.AsyncClient) -> list[tuple[int, float, dict]]:
        answers = []
        for _ in range(REQUESTS_PER_CLIENT):
            start = time.perf_counter()
            response = await http.post("/v1/segment", files={"image": ("s.png", image, "image/png")}, data={"masks": "false"})
            answers.append((response.status_code, time.perf_counter() - start, {**response.json(), "headers": dict(response.headers)}))
        return answers

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        results = await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return [answer for answers in results for answer in answers]


def test_overload_is_answered_with_429_and_the_server_stays_healthy() -> None:
    tag = toy_tag(image_size=64, num_clusters=4)
    image_array = toy.toy_scene(2, size=(96, 128))[0]
    expected = [s.label for s in tag(image_array).segments]
    rss_before = resident_mb()
    with served(create_app(tag, ServeSettings(workers=2, queue_size=4))) as url:
        start = time.perf_counter()
        answers = asyncio.run(hammer(url, png_bytes(image_array)))
        wall = time.perf_counter() - start
        statuses = [status for status, _, _ in answers]
        accepted = [(latency, body) for status, latency, body in answers if status == 200]
        refused = [body for status, _, body in answers if status == 429]
        assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
        assert set(statuses) <= {200, 429}, sorted(set(statuses))
        assert accepted and refused
        assert all([s["label"] for s in body["segments"]] == expected for _, body in accepted)
        assert all(body["error"]["code"] == "queue_full" and body["headers"]["retry-after"] for body in refused)
        growth = resident_mb() - rss_before
        assert growth < 300, f"resident memory grew by {growth:.0f} MB"
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "UP" and health["queue"] == {"running": 0, "waiting": 0}
        assert httpx.post(f"{url}/v1/segment", files={"image": ("s.png", png_bytes(image_array), "image/png")}).status_code == 200
        latencies = sorted(latency for latency, _ in accepted)
        print(
            f"\nload: {len(answers)} requests in {wall:.1f} s; {len(accepted)} answered 200 "
            f"(median {statistics.median(latencies) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms), "
            f"{len(refused)} answered 429; resident memory +{growth:.0f} MB"
        )

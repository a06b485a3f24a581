"""Soak the HTTP service: a real ``tagseg serve --preset toy`` on loopback, driven at its capacity.

``--clients`` concurrent clients (default: workers + queue places + 2, so the queue stays full and
some requests are refused with 429) post a toy scene to ``/v1/segment`` back to back for
``--duration`` seconds. Every ``--interval`` seconds it prints the requests answered per second,
p50/p99 latency of the answered ones, 429s, 5xx and the server's resident memory; at the end the
totals and the memory growth after the warm-up (the first ``--warmup`` seconds).

    python benchmarks/soak_service.py --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tagseg import toy
from tagseg.serve.local import local_server

CONNECTION_ERROR = 0
"""Counted like a status: the connection failed or was closed before an answer."""


def resident_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu() -> str:
    """The CPU model and count, from ``lscpu``."""
    facts = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
    return f"{facts.get('Model name', '?').strip()}, {facts.get('CPU(s)', '?').strip()} CPUs"


def scene_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(toy.toy_scene(2, size=(120, 160))[0]).save(buffer, format="PNG")
    return buffer.getvalue()


class Tally:
    """Answers since the last report: statuses and latencies of the 200s."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies.append(seconds)

    def line(self, seconds: float) -> str:
        answered = len(self.latencies)
        p50, p99 = (np.percentile(self.latencies, [50, 99]) * 1000) if answered else (float("nan"),) * 2
        errors = sum(n for s, n in self.statuses.items() if s >= 500)
        return (
            f"{answered / seconds:6.2f} req/s  p50 {p50:7.0f} ms  p99 {p99:7.0f} ms  429: {self.statuses.get(429, 0):5d}  "
            f"5xx: {errors}  connection errors: {self.statuses.get(CONNECTION_ERROR, 0)}"
        )


async def soak(url: str, pid: int, clients: int, duration: float, interval: float, warmup: float) -> None:
    image = scene_png()
    total, window = Tally(), Tally()
    deadline = time.monotonic() + duration

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                answer = await http.post("/v1/segment", files={"image": ("s.png", image, "image/png")}, data={"masks": "false"})
                status = answer.status_code
            except httpx.TransportError:
                status = CONNECTION_ERROR
            for tally in (total, window):
                tally.add(status, time.perf_counter() - start)
            if status != 200:
                await asyncio.sleep(0.05)

    async def report() -> list[tuple[float, float]]:
        started = time.monotonic()
        memory = [(0.0, resident_mib(pid))]
        nonlocal window
        while time.monotonic() < deadline:
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            elapsed = time.monotonic() - started
            memory.append((elapsed, resident_mib(pid)))
            print(f"{elapsed:6.0f} s  {window.line(interval)}  rss {memory[-1][1]:7.1f} MiB", flush=True)
            window = Tally()
        return memory

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        memory, *_ = await asyncio.gather(report(), *(client(http) for _ in range(clients)))
    after_warmup = [rss for elapsed, rss in memory if elapsed >= warmup] or [memory[-1][1]]
    growth = 100 * (memory[-1][1] - after_warmup[0]) / after_warmup[0]
    print(f"total over {duration:.0f} s with {clients} clients: {total.line(duration)}")
    print(f"resident memory: {memory[0][1]:.1f} MiB at start, {after_warmup[0]:.1f} MiB after {warmup:.0f} s warm-up, "
          f"{memory[-1][1]:.1f} MiB at the end: growth after warm-up {growth:+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 10 minutes)")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before memory growth is counted")
    parser.add_argument("--interval", type=float, default=30, help="seconds between reports")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default: workers + queue-size + 2)")
    args = parser.parse_args()
    clients = args.clients or args.workers + args.queue_size + 2
    print(f"CPU: {cpu()}; tagseg serve --preset toy --workers {args.workers} --queue-size {args.queue_size}; {clients} clients", flush=True)
    serve_arguments = ("--preset", "toy", "--workers", str(args.workers), "--queue-size", str(args.queue_size))
    with local_server(*serve_arguments) as (process, url):
        asyncio.run(soak(url, process.pid, clients, args.duration, args.interval, args.warmup))
        print(f"server still running at the end: {process.poll() is None}")


if __name__ == "__main__":
    main()

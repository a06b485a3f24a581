"""Benchmark the persistent text database on synthetic unit vectors (768-d, CLIP ViT-L/14 size).

For each size it builds a database (texts are placeholders, vectors are given: embedding time is
not measured here), then reports build time, size on disk, resident memory of a fresh process
that opens it and searches, latency of a batch of 15 queries with k=10 (median of 30 batches) and
recall@10 against exact search.

Vectors are drawn around random centres (``--spread`` sets how tight), like text embeddings that
gather by topic; ``--spread 0`` draws them uniformly on the sphere, the worst case for any
approximate index (no structure to exploit). Queries are drawn the same way.

    python benchmarks/bench_database.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tagseg.database.store import PersistentTextDatabase, Rows

DIM = 768
QUERIES = 15
K = 10
CHUNK = 65_536


def unit_vectors(count: int, centres: np.ndarray | None, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` L2-normalised vectors: around ``centres`` when given, else uniform on the sphere."""
    noise = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors = noise if centres is None else centres[rng.integers(0, len(centres), count)] + spread * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(path: Path, count: int, kind: str, centres: np.ndarray | None, spread: float) -> tuple[float, np.ndarray]:
    """Build the database and return (seconds, all vectors in id order)."""
    rng = np.random.default_rng(1)
    database = PersistentTextDatabase.create(path, model_id="synthetic", dim=DIM)
    parts = []
    start = time.perf_counter()
    with database.write_lock():
        for first in range(0, count, CHUNK):
            size = min(CHUNK, count - first)
            vectors = unit_vectors(size, centres, spread, rng)
            parts.append(vectors)
            ids = np.arange(first, first + size, dtype=np.uint64)
            database.append(Rows([f"text {i}" for i in range(first, first + size)], ["synthetic"] * size, ids, vectors))
        database.reindex(kind)
    return time.perf_counter() - start, np.concatenate(parts)


def probe(path: Path, queries: np.ndarray) -> dict:
    """Open the database in a fresh process, search, and report latency, RSS and the results."""
    script = f"""
import json, sys, time, numpy as np
from tagseg.database import PersistentTextDatabase
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024
base = rss()
database = PersistentTextDatabase.open({str(path)!r}, verify=False)
opened = rss()
queries = np.load(sys.argv[1])
database.search(queries, {K})
times = []
for _ in range(30):
    start = time.perf_counter()
    hits = database.search(queries, {K})
    times.append(time.perf_counter() - start)
print(json.dumps({{"rss_open": opened - base, "rss_after_search": rss() - base, "rss_total": rss(),
    "latency_ms": 1000 * float(np.median(times)), "ids": [[h.id for h in q] for q in hits]}}))
"""
    with tempfile.NamedTemporaryFile(suffix=".npy") as handle:
        np.save(handle.name, queries)
        output = subprocess.run([sys.executable, "-c", script, handle.name], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kind", default="auto", help="index kind: auto, flat, ivf, hnsw")
    parser.add_argument("--centres", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.035, help="0 for uniform vectors on the sphere")
    parser.add_argument("--folder", type=Path, default=None, help="where to build (default: a temporary folder)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = None if args.spread == 0 else unit_vectors(args.centres, None, 0.0, rng)
    queries = unit_vectors(QUERIES, centres, args.spread, np.random.default_rng(2))
    for count in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            path = Path(folder) / f"db-{count}"
            seconds, vectors = build(path, count, args.kind, centres, args.spread)
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
            del vectors
            facts = probe(path, queries)
            recall = np.mean([len(set(found) & set(truth)) / K for found, truth in zip(facts["ids"], exact)])
            manifest = json.loads((path / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in path.iterdir())
            print(
                f"n={count:>9,}  index={manifest['shards'][0]['index']:<5} build={seconds:7.1f} s  "
                f"disk={size / 2**20:8.1f} MiB  rss(open)={facts['rss_open'] / 2**20:7.1f} MiB  "
                f"rss(after search)={facts['rss_after_search'] / 2**20:7.1f} MiB  "
                f"latency(15 queries, k={K})={facts['latency_ms']:6.2f} ms  recall@{K}={recall:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

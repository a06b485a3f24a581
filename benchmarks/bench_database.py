"""Benchmark the persistent text database on synthetic unit vectors (768-d, CLIP ViT-L/14 size).

For each size it builds a database the way ``tagseg db build`` does (64k-row shards committed one
after another, then one index trained on a sample and filled shard by shard; texts are
placeholders and embedding time is not measured), then reports build time, size on disk, resident
memory of a fresh process that opens it and searches, latency of a batch of 15 queries with k=10
(median over the batches) and recall@10 against exact search on 1,000 held-out queries.

Vectors are drawn around random centres (``--spread`` sets how tight), like text embeddings that
gather by topic; ``--spread 0`` draws them uniformly on the sphere, the worst case for any
approximate index. They are generated chunk by chunk from seeds fixed per chunk, so a run is
reproducible and never holds all vectors; the exact top 10 of every query is kept up to date
chunk by chunk as well. Queries are drawn the same way from their own seed (none is stored).

    python benchmarks/bench_database.py --sizes 1000000 3000000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tagseg.database.store import PersistentTextDatabase, Rows

DIM = 768
QUERIES = 1_000
BATCH = 15
K = 10
CHUNK = 65_536


def noise_scales(decay: float) -> np.ndarray:
    """Per-dimension noise scales: variance ``rank ** -decay`` over the dimensions in a fixed random
    order, mean variance 1 (``decay`` 0: isotropic noise)."""
    variances = (1.0 + np.random.default_rng(3).permutation(DIM)) ** -decay
    return np.sqrt(variances / variances.mean()).astype(np.float32)


def unit_vectors(count: int, centres: np.ndarray | None, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``count`` L2-normalised vectors: around ``centres`` with per-dimension noise ``spread``, else uniform."""
    noise = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors = noise if centres is None else centres[rng.integers(0, len(centres), count)] + spread * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk_vectors(first: int, size: int, centres: np.ndarray | None, spread: np.ndarray) -> np.ndarray:
    """The vectors of rows ``first .. first + size`` (a chunk boundary), the same on every run."""
    return unit_vectors(size, centres, spread, np.random.default_rng([1, first // CHUNK]))


def build(path: Path, count: int, kind: str, centres: np.ndarray | None, spread: np.ndarray, queries: np.ndarray) -> tuple[float, np.ndarray]:
    """Build the database; returns (seconds, exact top-``K`` rows of every query)."""
    database = PersistentTextDatabase.create(path, model_id="synthetic", dim=DIM)
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), K), dtype=np.int64)
    seconds = 0.0
    with database.write_lock():
        for first in range(0, count, CHUNK):
            size = min(CHUNK, count - first)
            vectors = chunk_vectors(first, size, centres, spread)
            scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
            rows = np.concatenate([best_rows, np.broadcast_to(np.arange(first, first + size), (len(queries), size))], axis=1)
            top = np.argpartition(-scores, K, axis=1)[:, :K]
            best_scores, best_rows = np.take_along_axis(scores, top, axis=1), np.take_along_axis(rows, top, axis=1)
            start = time.perf_counter()
            ids = np.arange(first, first + size, dtype=np.uint64)
            database.append(Rows([f"text {i}" for i in range(first, first + size)], ["synthetic"] * size, ids, vectors))
            seconds += time.perf_counter() - start
        start = time.perf_counter()
        database.reindex(kind)
        seconds += time.perf_counter() - start
    return seconds, best_rows


def probe(path: Path, queries: np.ndarray) -> dict:
    """Open the database in a fresh process, search the queries in batches, report latency, RSS and ids."""
    script = f"""
import json, sys, time, numpy as np
from tagseg.database import PersistentTextDatabase
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024
base = rss()
database = PersistentTextDatabase.open({str(path)!r}, verify=False)
opened = rss()
queries = np.load(sys.argv[1])
database.search(queries[:{BATCH}], {K})
times, ids = [], []
for first in range(0, len(queries), {BATCH}):
    start = time.perf_counter()
    hits = database.search(queries[first:first + {BATCH}], {K})
    times.append(time.perf_counter() - start)
    ids.extend([h.id for h in q] for q in hits)
print(json.dumps({{"rss_open": opened - base, "rss_total": rss(), "latency_ms": 1000 * float(np.median(times)), "ids": ids}}))
"""
    with tempfile.NamedTemporaryFile(suffix=".npy") as handle:
        np.save(handle.name, queries)
        output = subprocess.run([sys.executable, "-c", script, handle.name], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def cpu() -> str:
    """The CPU model and its vector extensions, from ``lscpu``."""
    facts = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
    flags = [f for f in facts.get("Flags", "").split() if f.startswith(("avx", "sse4", "fma", "f16c"))]
    return f"{facts.get('Model name', platform.processor()).strip()}, {facts.get('CPU(s)', '?').strip()} CPUs, flags: {' '.join(flags)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--kind", default="auto", help="index kind: auto, flat, ivf, ivfpq, hnsw")
    parser.add_argument("--centres", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.035, help="noise around the centres, per dimension; 0 for uniform vectors on the sphere")
    parser.add_argument("--decay", type=float, default=1.0, help="noise variance falls as rank**-decay over the dimensions (0: isotropic)")
    parser.add_argument("--folder", type=Path, default=None, help="where to build (default: a temporary folder)")
    args = parser.parse_args()
    print(f"CPU: {cpu()}", flush=True)
    centres = None if args.spread == 0 else unit_vectors(args.centres, None, np.zeros(DIM, np.float32), np.random.default_rng(0))
    spread = args.spread * noise_scales(args.decay)
    queries = unit_vectors(QUERIES, centres, spread, np.random.default_rng(2))
    for count in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            path = Path(folder) / f"db-{count}"
            seconds, exact = build(path, count, args.kind, centres, spread, queries)
            facts = probe(path, queries)
            recall = np.mean([len(set(found) & set(truth)) / K for found, truth in zip(facts["ids"], exact.tolist())])
            manifest = json.loads((path / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in path.iterdir())
            vectors = sum(f.stat().st_size for f in path.glob("*.faiss"))
            print(
                f"n={count:>11,}  index={manifest['shards'][0]['index']:<5} build={seconds:7.1f} s  "
                f"disk={size / 1e9:6.3f} GB (vectors {vectors / 1e9:6.3f} GB, {vectors / count:5.1f} B/entry)  "
                f"rss(open)={facts['rss_open'] / 2**20:7.1f} MiB  rss(serving, whole process)={facts['rss_total'] / 2**20:7.1f} MiB  "
                f"latency({BATCH} queries, k={K})={facts['latency_ms']:6.2f} ms  recall@{K}({QUERIES} queries)={recall:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

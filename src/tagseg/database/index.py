"""FAISS indexes behind the databases: which kind to build, reading them memory-mapped, searching.

Every index here uses inner product on L2-normalised vectors (cosine similarity). Row ``i`` of
an index is row ``i`` of the texts stored beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from tagseg.errors import ConfigError, DatabaseError

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
"""``flat``: exact search over float32 vectors. ``ivf``: inverted lists of float16 vectors, about
half the memory, searched approximately. ``hnsw``: a graph over float16 vectors, the fastest
approximate search, slow to build. ``auto``: ``flat`` up to :data:`APPROXIMATE_FROM` entries,
``ivf`` above."""

APPROXIMATE_FROM = 250_000
IVF_PROBE_FRACTION = 1 / 256
IVF_MIN_PROBES = 8
IVF_TRAINING_ITERATIONS = 10
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128

# Exact search of a batch (TAG sends one query per segment, about 15) is memory-bound: through BLAS
# the stored vectors are read once per batch instead of once per query.
faiss.cvar.distance_compute_blas_threshold = 4


def resolve_kind(kind: str, count: int) -> str:
    """The concrete index kind for ``kind`` (possibly ``auto``) and ``count`` entries."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"Unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}.")
    if kind == "auto":
        return "flat" if count < APPROXIMATE_FROM else "ivf"
    return kind


def ivf_lists(count: int) -> int:
    """Number of inverted lists for ``count`` vectors: about ``2 * sqrt(count)``, a power of two."""
    return max(1, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(count)))))


def new_index(kind: str, dim: int, count: int) -> faiss.Index:
    """An empty index of a concrete ``kind`` sized for ``count`` vectors (IVF still needs training)."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        nlist = ivf_lists(count)
        index = faiss.index_factory(dim, f"IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nlist, max(IVF_MIN_PROBES, round(nlist * IVF_PROBE_FRACTION)))
        ivf.cp.niter = IVF_TRAINING_ITERATIONS
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    raise ConfigError(f"Unknown concrete index kind {kind!r}.")


def training_size(kind: str, count: int) -> int:
    """How many vectors ``kind`` wants for training (0 when it needs none)."""
    if kind == "ivf":
        return min(count, 32 * ivf_lists(count))
    if kind == "hnsw":
        return min(count, 65_536)
    return 0


def finish_index(index: faiss.Index) -> None:
    """Make rows of an IVF index reconstructable (needed to return hit vectors)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.make_direct_map()


def read_index(path: Path, *, mmap: bool = True) -> faiss.Index:
    """Read a FAISS index, memory-mapped read-only when ``mmap``; a clear error when unreadable."""
    if not path.is_file():
        raise DatabaseError(f"The vector index {path} is missing.")
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as error:
        raise DatabaseError(f"The vector index {path} is corrupt or not a FAISS index: {error}") from error
    _no_prefetch_threads(index)
    return index


def _no_prefetch_threads(index: faiss.Index) -> None:
    """Stop memory-mapped IVF lists from starting prefetch threads on every search.

    FAISS serves memory-mapped inverted lists through ``OnDiskInvertedLists``, which by default
    starts 32 threads per search to read the probed lists ahead; once the lists are in the page
    cache that costs more than the scan itself (12 ms instead of 4.4 ms for 15 queries at 1M).
    """
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:
        return
    if isinstance(lists, faiss.OnDiskInvertedLists):
        lists.prefetch_nthread = 0


def index_dim(index: faiss.Index) -> int:
    """The vector dimension of ``index``."""
    return int(index.d)


def can_reconstruct(index: faiss.Index) -> bool:
    """Whether stored vectors can be read back from ``index`` (IVF lists gain a direct map if needed)."""
    if index.ntotal == 0:
        return True
    try:
        index.reconstruct(0)
        return True
    except RuntimeError:
        pass
    try:
        faiss.extract_index_ivf(index).make_direct_map()
        index.reconstruct(0)
        return True
    except RuntimeError:
        return False


def search_index(
    index: faiss.Index, queries: np.ndarray, k: int, *, with_vectors: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores ``(Q, k)``, rows ``(Q, k)`` (-1 where fewer exist) and vectors ``(Q, k, dim)`` if asked."""
    k = min(k, int(index.ntotal))
    if k <= 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.float32), empty.astype(np.int64), None
    scores, rows = index.search(queries, k)
    if not with_vectors:
        return scores, rows, None
    flat_rows = rows.reshape(-1)
    vectors = np.zeros((flat_rows.size, index.d), dtype=np.float32)
    valid = flat_rows >= 0
    if valid.any():
        vectors[valid] = vectors_at(index, flat_rows[valid])
    return scores, rows, vectors.reshape(rows.shape[0], rows.shape[1], index.d)


def vectors_at(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of ``rows`` (all valid), float32 ``(len(rows), dim)``, in one call."""
    return index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))


def all_vectors(index: faiss.Index) -> np.ndarray:
    """Every stored vector of ``index`` in row order (float32)."""
    if index.ntotal == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    return index.reconstruct_n(0, index.ntotal)

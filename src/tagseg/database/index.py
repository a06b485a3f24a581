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

INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
"""``flat``: exact search over float32 vectors. ``ivf``: inverted lists of float16 vectors, about
half the memory, searched approximately. ``ivfpq``: inverted lists of product-quantised codes
(one byte per 8 dimensions, 96 at 768-d; the layout of LAION-scale clip-retrieval indexes), about
a fourteenth of ``ivf``'s size, vectors given back approximately. ``hnsw``: a graph over float16
vectors, the fastest approximate search, slow to build. ``auto``: ``flat`` up to :data:`APPROXIMATE_FROM`
entries, ``ivf`` up to :data:`COMPRESS_FROM`, ``ivfpq`` above."""

APPROXIMATE_FROM = 250_000
COMPRESS_FROM = 10_000_000
IVF_PROBE_FRACTION = 1 / 256
IVF_MIN_PROBES = 8
IVF_TRAINING_ITERATIONS = 10
PQ_DIMS_PER_BYTE = 8
PQ_PROBES = 16
PQ_TRAINING_SIZE = 65_536
"""Vectors sampled to train the product quantiser (256 centroids per sub-quantiser)."""
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
        return "flat" if count < APPROXIMATE_FROM else "ivf" if count < COMPRESS_FROM else "ivfpq"
    return kind


def ivf_lists(count: int) -> int:
    """Number of inverted lists for ``count`` vectors: about ``2 * sqrt(count)``, a power of two."""
    return max(1, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(count)))))


def pq_bytes(dim: int) -> int:
    """Bytes of an ``ivfpq`` code (8-bit sub-quantisers): about one per 8 dimensions, dividing ``dim``."""
    return max(m for m in range(1, max(1, dim // PQ_DIMS_PER_BYTE) + 1) if dim % m == 0)


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
    if kind == "ivfpq":
        nlist = ivf_lists(count)
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_bytes(dim)}", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nlist, PQ_PROBES)
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
    if kind == "ivfpq":
        return min(count, max(32 * ivf_lists(count), PQ_TRAINING_SIZE))
    if kind == "hnsw":
        return min(count, 65_536)
    return 0


def finish_index(index: faiss.Index) -> None:
    """Make rows of an IVF index reconstructable (needed to return hit vectors)."""
    if is_ivf(index):
        faiss.extract_index_ivf(index).make_direct_map()


def drop_rows(index: faiss.Index, rows: np.ndarray) -> None:
    """Remove ``rows`` from an in-memory IVF ``index`` and renumber the rest ``0..n-1`` in order.

    The kept entries keep their codes as they are (nothing is decoded and encoded again, which
    would lose precision with product quantisation), so the index stays trained and as accurate.
    """
    ivf = faiss.extract_index_ivf(index)
    dead = np.zeros(index.ntotal, dtype=bool)
    dead[rows] = True
    renumbered = np.cumsum(~dead) - 1
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(rows, dtype=np.int64)))
    lists = ivf.invlists
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if size:
            ids = np.ascontiguousarray(renumbered[faiss.rev_swig_ptr(lists.get_ids(number), size)])
            codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
            lists.update_entries(number, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    ivf.make_direct_map()


def is_ivf(index: faiss.Index) -> bool:
    """Whether ``index`` keeps its vectors in inverted lists (``ivf``, ``ivfpq``)."""
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


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

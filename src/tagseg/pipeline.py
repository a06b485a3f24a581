"""TAG as one callable: an image in, named segments out. Wires the stages; owns nothing else."""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tagseg import builder, granularity
from tagseg import segments as seg
from tagseg.config import ModelSettings, TAGConfig, preset
from tagseg.controls import apply_controls
from tagseg.errors import ConfigError
from tagseg.image import ImageSource, load_image
from tagseg.interfaces import DenseImageEmbedder, PatchFeatureExtractor, TextDatabase, TextEncoder
from tagseg.naming import CandidateEmbeddings, Naming, name_segments
from tagseg.result import Segment, Segmentation

T = TypeVar("T")


class TAG:
    """Guidance-free open-vocabulary segmentation.

    ``TAG.from_pretrained("paper")`` builds the paper's models; ``TAG(...)`` takes any
    implementations of the four seams. Calling it with an image returns a :class:`Segmentation`.
    """

    def __init__(
        self,
        features: PatchFeatureExtractor,
        embedder: DenseImageEmbedder,
        text_encoder: TextEncoder,
        database: TextDatabase,
        config: TAGConfig | None = None,
    ) -> None:
        if database.dim != text_encoder.dim or embedder.dim != text_encoder.dim:
            raise ValueError(
                f"Embedding sizes differ: image embedder {embedder.dim}, text encoder {text_encoder.dim}, "
                f"database {database.dim}; all three must share one joint space."
            )
        self.features = features
        self.embedder = embedder
        self.text_encoder = text_encoder
        self.database = database
        self.config = config or TAGConfig()
        self.candidate_embeddings = CandidateEmbeddings(text_encoder, self.config.naming.prompt_template)

    @classmethod
    def from_pretrained(
        cls,
        name_or_config: str | TAGConfig = "paper",
        *,
        database: TextDatabase | str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> "TAG":
        """Build from a preset name (``paper``, ``fast``, ``toy``, ``proxyclip``) or a :class:`TAGConfig`.

        Keyword overrides replace config fields, e.g. ``clip_model="/models/clip"``, ``num_clusters=8``.
        ``database`` is a database folder (or ``"default"``), or a ready :class:`TextDatabase`.
        Models are built by :mod:`tagseg.builder` from their specs (Hugging Face id, directory,
        ``toy`` or a registered backend).
        """
        if isinstance(database, (str, os.PathLike)):
            overrides["database"], database = os.fspath(database), None
        if isinstance(name_or_config, TAGConfig):
            config = name_or_config.replace(**overrides)
        else:
            config = preset(name_or_config, **overrides)
        seams = builder.build(config, database=database)
        return cls(seams.features, seams.embedder, seams.text_encoder, seams.database, config)

    @property
    def models(self) -> dict[str, str]:
        """Which model made each part of the result, and (``dtype``) the precision the torch backbones ran in.

        ``dtype`` is the resolved type (``dtype="auto"`` shows as ``bfloat16`` or ``float32``); seams
        without a torch dtype (the toy world) add none, and backbones in different types are listed all.
        """
        models = {
            "features": self.features.model_id,
            "embedder": self.embedder.model_id,
            "text_encoder": self.text_encoder.model_id,
        }
        seams = (self.features, self.embedder, self.text_encoder)
        dtypes = {str(seam.dtype).removeprefix("torch.") for seam in seams if isinstance(getattr(seam, "dtype", None), torch.dtype)}
        if dtypes:
            models["dtype"] = ",".join(sorted(dtypes))
        return models

    def __call__(self, image: ImageSource, **overrides: Any) -> Segmentation:
        """Segment one image (path, bytes, PIL image or HxWx3 array) and name its segments.

        ``overrides`` change settings of the ``clusters``, ``embedding``, ``naming`` and ``controls``
        sections for this call only (flat keys such as ``num_clusters=8`` or ``dense_method="naclip"``,
        or section objects); ``self.config`` stays as it is. Model settings are fixed when the TAG is built.
        """
        config = self.settings_for(**overrides)
        embedder = self._embedder_for(config)
        timings: dict[str, float] = {}
        rgb, working, pixels = self._prepare(image, timings)
        height, width = working.shape[:2]
        clusters = config.clusters
        with _timed(timings, "features"):
            patch_features = self._patch_features(pixels)
            features = patch_features[0].float().cpu()
        with _timed(timings, "kmeans"):
            centres = granularity.cluster_centres(features.reshape(-1, features.shape[-1]), clusters)
            scores = seg.upsample(seg.cluster_scores(features, centres), (height, width))
        with _timed(timings, "crf"):
            if clusters.crf.enabled:
                cluster_map = seg.refine_with_crf(scores, working, clusters.crf)
            else:
                cluster_map = scores.argmax(dim=0).numpy().astype(np.int32)
        with _timed(timings, "regions"):
            min_area = round(clusters.min_region_area * height * width)
            cluster_map = granularity.merge_small_regions(cluster_map, scores.numpy(), min_area)
            cluster_map, cluster_ids = seg.compact_labels(cluster_map)
        with _timed(timings, "embedder"):
            embeddings = _dense_embeddings(embedder, pixels, patch_features)
        with _timed(timings, "pooling"):
            pooled = seg.pool_embeddings(embeddings, cluster_map, len(cluster_ids))
        namings = self._name(pooled, timings, config)
        with _timed(timings, "assemble"):
            full_clusters = _resize_labels(cluster_map, rgb.shape[:2])
            result = _assemble(full_clusters, cluster_ids, namings, pooled.numpy())
        return self._finish(result, timings, config)

    def name_regions(self, image: ImageSource, regions: np.ndarray, **overrides: Any) -> Segmentation:
        """Name regions given by the caller (Stages 2 and 3 only): no k-means, no CRF.

        ``regions`` is an integer (or boolean) map of the image's own size; every distinct value is
        one region, kept in ``Segment.cluster_ids``. Masks from another segmenter (SAM, an
        annotation tool) become such a map, e.g. ``np.argmax(np.stack([background, *masks]), 0)``.
        Regions with the same name are merged, as for proposed segments. ``overrides`` as for
        :meth:`__call__`.
        """
        config = self.settings_for(**overrides)
        embedder = self._embedder_for(config)
        timings: dict[str, float] = {}
        rgb, working, pixels = self._prepare(image, timings)
        regions = np.asarray(regions)
        if regions.shape != rgb.shape[:2] or not (np.issubdtype(regions.dtype, np.integer) or regions.dtype == bool):
            raise ValueError(
                f"regions must be an integer map of the image's size {rgb.shape[:2]}, "
                f"not {regions.dtype} of shape {regions.shape}"
            )
        region_map, region_ids = seg.compact_labels(regions)
        proxy_features = None
        if _uses_proxy_features(embedder):  # no Stage 1 here: the patch features only when the method needs them
            with _timed(timings, "features"):
                proxy_features = self._patch_features(pixels)
        with _timed(timings, "embedder"):
            embeddings = _dense_embeddings(embedder, pixels, proxy_features)
        with _timed(timings, "pooling"):
            coverage = np.stack([_area_resize(region_map == k, working.shape[:2]) for k in range(len(region_ids))])
            pooled = seg.pool_embeddings_weighted(embeddings, torch.from_numpy(coverage))
        namings = self._name(pooled, timings, config)
        with _timed(timings, "assemble"):
            result = _assemble(region_map, region_ids, namings, pooled.numpy())
        return self._finish(result, timings, config)

    def settings_for(self, **overrides: Any) -> TAGConfig:
        """The settings a call with these per-call ``overrides`` runs with (``None`` values ignored).

        Raises :class:`~tagseg.errors.ConfigError` for unknown or invalid settings, for model
        settings, which only :meth:`from_pretrained` can change, and for embedding settings the
        embedder cannot run (a window that is not whole patches, an embedder without dense methods).
        """
        fixed = sorted(key for key, value in overrides.items() if value is not None and key in MODEL_KEYS)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change per call: the models are loaded with them. "
                f"Build another pipeline, e.g. TAG.from_pretrained(config.replace({fixed[0]}=...))."
            )
        config = self.config.replace(**overrides) if overrides else self.config
        self._embedder_for(config)
        return config

    def _embedder_for(self, config: TAGConfig) -> DenseImageEmbedder:
        """The dense embedder of ``config``'s embedding settings: the built one, or (per call) the same
        model with another dense method through its ``with_method`` (no load, shared weights)."""
        if config.embedding == self.config.embedding:
            return self.embedder
        with_method = getattr(self.embedder, "with_method", None)
        if with_method is None:
            raise ConfigError(
                f"The dense image embedder {self.embedder.model_id} has no dense CLIP methods, so the embedding "
                "settings (dense_method, gem_depth, method_settings, window_size, window_stride) cannot change per "
                "call; build the pipeline with them, with a CLIP model as clip_model."
            )
        return with_method(**config.embedding.dense_options())

    def _patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Stage 1's patch features of the working pixels, ``(1, h, w, C)`` as the extractor returns them."""
        return self.features(_fit_to_patches(pixels, self.features.patch_size))

    def _prepare(self, image: ImageSource, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The RGB image, its working-size copy and that copy as (1, 3, h, w) pixels in [0, 1]."""
        with _timed(timings, "load"):
            rgb = load_image(image)
        height, width = working_size(rgb.shape[0], rgb.shape[1], self.config.models.image_size, self.config.models.keep_aspect_ratio)
        with _timed(timings, "preprocess"):
            working = np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
            pixels = torch.from_numpy(working).permute(2, 0, 1)[None].float() / 255.0
        return rgb, working, pixels

    def _name(self, pooled: torch.Tensor, timings: dict[str, float], config: TAGConfig) -> list[Naming]:
        """Stage 3 on segment embeddings, then the optional naming controls."""
        candidate_embeddings = self.candidate_embeddings
        if config.naming.prompt_template != candidate_embeddings.template:  # a per-call template: no shared cache
            candidate_embeddings = CandidateEmbeddings(self.text_encoder, config.naming.prompt_template)
        with _timed(timings, "naming"):
            namings = name_segments(pooled, self.database, candidate_embeddings, config.naming)
            return apply_controls(namings, pooled, candidate_embeddings, config.controls)

    def _finish(self, result: Segmentation, timings: dict[str, float], config: TAGConfig) -> Segmentation:
        result.settings = config.to_dict()
        result.models = self.models
        result.timings = timings
        return result


MODEL_KEYS = frozenset({"models", *(item.name for item in dataclasses.fields(ModelSettings))})
"""Settings that :meth:`TAG.__call__` refuses per call: the model section, whole or field by field."""


def working_size(height: int, width: int, size: int, keep_aspect_ratio: bool) -> tuple[int, int]:
    """The (height, width) the models see: ``size`` square, or the longer side ``size`` keeping the aspect."""
    if not keep_aspect_ratio:
        return (size, size)
    scale = size / max(height, width)
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def _uses_proxy_features(embedder: DenseImageEmbedder) -> bool:
    """Whether ``embedder`` takes the patch features of Stage 1 (``uses_proxy_features``, false when absent)."""
    return bool(getattr(embedder, "uses_proxy_features", False))


def _dense_embeddings(
    embedder: DenseImageEmbedder, pixels: torch.Tensor, patch_features: torch.Tensor | None
) -> torch.Tensor:
    """Stage 2: ``(h, w, dim)`` float32 CPU embeddings of the working pixels; an embedder that uses
    proxy features gets Stage 1's ``patch_features`` of the same pixels (no second forward)."""
    fitted = _fit_to_patches(pixels, embedder.patch_size)
    if _uses_proxy_features(embedder):
        return embedder(fitted, proxy_features=patch_features)[0].float().cpu()  # type: ignore[call-arg]
    return embedder(fitted)[0].float().cpu()


def _fit_to_patches(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) so both sides are the nearest multiple of ``patch_size``."""
    height, width = pixels.shape[-2:]
    target = (max(patch_size, round(height / patch_size) * patch_size), max(patch_size, round(width / patch_size) * patch_size))
    if target == (height, width):
        return pixels
    return F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=True)


def _area_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The fraction of each pixel of a (height, width) grid that ``mask`` covers (box filter).

    Unlike a nearest-neighbour resize, no region smaller than a working pixel disappears.
    """
    image = Image.fromarray(mask.astype(np.float32))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BOX), dtype=np.float32)


def _resize_labels(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map to ``size`` (height, width)."""
    if label_map.shape == tuple(size):
        return label_map
    resized = Image.fromarray(label_map.astype(np.int32)).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.int32)


def _assemble(cluster_map: np.ndarray, cluster_ids: np.ndarray, namings: list, embeddings: np.ndarray) -> Segmentation:
    """Merge clusters that got the same name into one segment each, largest segment first."""
    areas = np.bincount(cluster_map.ravel(), minlength=len(namings))
    groups: dict[str, list[int]] = {}
    for cluster, naming in enumerate(namings):
        if areas[cluster] > 0:
            groups.setdefault(naming.label, []).append(cluster)
    ordered = sorted(groups.items(), key=lambda item: -int(areas[item[1]].sum()))
    segment_of_cluster = np.zeros(len(namings), dtype=np.int32)
    for segment_id, (_, clusters) in enumerate(ordered):
        segment_of_cluster[clusters] = segment_id
    label_map = segment_of_cluster[cluster_map]
    segments = []
    for segment_id, (label, clusters) in enumerate(ordered):
        mask = label_map == segment_id
        weights = areas[clusters] / areas[clusters].sum()
        segments.append(
            Segment(
                id=segment_id,
                label=label,
                score=float(sum(w * namings[c].score for w, c in zip(weights, clusters))),
                mask=mask,
                cluster_ids=[int(cluster_ids[c]) for c in clusters],
                candidates=_merge_best(
                    (cand for c in clusters for cand in namings[c].candidates), key=lambda x: x.name, value=lambda x: x.score
                ),
                retrieved=_merge_best(
                    (r for c in clusters for r in namings[c].retrieved), key=lambda x: x.text, value=lambda x: x.similarity
                ),
                embedding=(weights[:, None] * embeddings[clusters]).sum(axis=0),
            )
        )
    original_cluster_map = cluster_ids[cluster_map].astype(np.int32)
    return Segmentation(label_map=label_map, segments=segments, cluster_map=original_cluster_map)


def _merge_best(items: Iterable[T], key: Callable[[T], str], value: Callable[[T], float]) -> list[T]:
    """Keep the highest-valued item per key, best first."""
    best: dict[str, Any] = {}
    for item in items:
        if key(item) not in best or value(item) > value(best[key(item)]):
            best[key(item)] = item
    return sorted(best.values(), key=lambda x: -value(x))


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start

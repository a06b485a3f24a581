"""TAG as one callable: an image in, named segments out. Wires the stages; owns nothing else."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

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
from tagseg.interfaces import DenseImageEmbedder, PatchFeatureExtractor, RegionProposer, TextDatabase, TextEncoder
from tagseg.naming import CandidateEmbeddings, Naming, name_segments
from tagseg.result import Region, Segment, Segmentation
from tagseg.segmenters.regions import regions_from_masks

T = TypeVar("T")


class TAG:
    """Guidance-free open-vocabulary segmentation.

    ``TAG.from_pretrained("paper")`` builds the paper's models; ``TAG(...)`` takes any
    implementations of the four seams, and optionally a :class:`~tagseg.interfaces.RegionProposer`
    for ``segmenter="sam"`` (else it is built from ``config.sam_model`` the first time a call asks
    for it). Calling it with an image returns a :class:`Segmentation`. Built from seams, its
    ``config`` (and so every result's ``settings``) names the seams' ``model_id`` as
    ``feature_model`` and ``clip_model``, whatever specs ``config`` held.
    """

    def __init__(
        self,
        features: PatchFeatureExtractor,
        embedder: DenseImageEmbedder,
        text_encoder: TextEncoder,
        database: TextDatabase,
        config: TAGConfig | None = None,
        proposer: RegionProposer | None = None,
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
        # Results record the models actually used: the seams' ids, not the config's default specs.
        self.config = (config or TAGConfig()).replace(feature_model=features.model_id, clip_model=embedder.model_id)
        self.proposer = proposer
        self._proposer_lock = threading.Lock()
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
        tag = cls(seams.features, seams.embedder, seams.text_encoder, seams.database, config, seams.proposer)
        tag.config = config  # the seams were built from these specs: keep them (rebuildable, e.g. "toy")
        return tag

    @property
    def models(self) -> dict[str, str]:
        """Which model made each part of the result, and (``dtype``) the precision the torch backbones ran in.

        ``dtype`` is the resolved type (``dtype="auto"`` shows as ``bfloat16`` or ``float32``); seams
        without a torch dtype (the toy world) add none, and backbones in different types are listed all.
        Results of ``segmenter="sam"`` also name the ``proposer`` (:meth:`_models_with`).
        """
        return self._models_with(None)

    def _models_with(self, proposer: RegionProposer | None) -> dict[str, str]:
        models = {
            "features": self.features.model_id,
            "embedder": self.embedder.model_id,
            "text_encoder": self.text_encoder.model_id,
        }
        if proposer is not None:
            models["proposer"] = proposer.model_id
        seams = (self.features, self.embedder, self.text_encoder, proposer)
        dtypes = {str(seam.dtype).removeprefix("torch.") for seam in seams if isinstance(getattr(seam, "dtype", None), torch.dtype)}
        if dtypes:
            models["dtype"] = ",".join(sorted(dtypes))
        return models

    def __call__(self, image: ImageSource, **overrides: Any) -> Segmentation:
        """Segment one image (path, bytes, PIL image or HxWx3 array) and name its segments.

        ``overrides`` change settings of the ``clusters``, ``embedding``, ``naming`` and ``controls``
        sections for this call only (flat keys such as ``num_clusters=8``, ``segmenter="sam"`` or
        ``dense_method="naclip"``, or section objects); ``self.config`` stays as it is. Model settings
        are fixed when the TAG is built.
        """
        config = self.settings_for(**overrides)  # bad overrides fail before any forward
        if config.clusters.segmenter == "sam":  # the proposer first; each backbone only if it is needed
            timings: dict[str, float] = {}
            rgb, working, pixels = self._prepare(image, timings)
            embedder = self._embedder_for(config)

            @functools.cache
            def patch_features() -> torch.Tensor:
                with _timed(timings, "features"):
                    return self._patch_features(pixels)

            def embeddings() -> torch.Tensor:
                proxy = patch_features() if _uses_proxy_features(embedder) else None
                with _timed(timings, "embedder"):
                    return _dense_embeddings(embedder, pixels, proxy)[0]

            return self._segment_with_proposer(
                rgb, working, config, timings,
                features=lambda: patch_features()[0].float().cpu(), embeddings=embeddings,
            )
        return self._finish_forwarded(self._forward([image], config)[0], config)

    def forward(self, images: Sequence[ImageSource], **overrides: Any) -> list["Forwarded"]:
        """The backbone part of :meth:`__call__` for several images: decoding, resizing and both forwards.

        Images of the same working size share one forward per backbone (a batch; several images per
        forward pay on a GPU). :meth:`finish` does the rest of each image on the CPU, so a runner can
        finish one image while the next ones go through the backbones (:mod:`tagseg.stream`).
        ``overrides`` as for :meth:`__call__` (the ``embedding`` section chooses the dense method);
        a method that uses proxy features gets the batch's patch features (no second forward).
        """
        return self._forward(images, self.settings_for(**overrides))

    def _forward(self, images: Sequence[ImageSource], config: TAGConfig) -> list["Forwarded"]:
        embedder = self._embedder_for(config)
        prepared = []
        for image in images:
            timings: dict[str, float] = {}
            prepared.append((*self._prepare(image, timings), timings))
        features: list[torch.Tensor | None] = [None] * len(prepared)
        embeddings: list[torch.Tensor | None] = [None] * len(prepared)
        for group in _same_size_groups([pixels.shape for _, _, pixels, _ in prepared]):
            pixels = torch.cat([prepared[i][2] for i in group])
            start = time.perf_counter()
            patch_features = self._patch_features(pixels)
            middle = time.perf_counter()
            batch_embeddings = _dense_embeddings(embedder, pixels, patch_features)
            end = time.perf_counter()
            batch_features = patch_features.float().cpu()
            for position, i in enumerate(group):
                features[i], embeddings[i] = batch_features[position], batch_embeddings[position]
                prepared[i][3]["features"] = (middle - start) / len(group)
                prepared[i][3]["embedder"] = (end - middle) / len(group)
        return [
            Forwarded(rgb, working, features[i], embeddings[i], timings)  # type: ignore[arg-type]
            for i, (rgb, working, _, timings) in enumerate(prepared)
        ]

    def finish(self, forwarded: "Forwarded", **overrides: Any) -> Segmentation:
        """The CPU part of :meth:`__call__` on one image's :meth:`forward` output: Stage 1 after the
        DINOv2 forward (k-means, CRF, small regions), pooling, naming and the result."""
        return self._finish_forwarded(forwarded, self.settings_for(**overrides))

    def _finish_forwarded(self, forwarded: "Forwarded", config: TAGConfig) -> Segmentation:
        timings = dict(forwarded.timings)
        if config.clusters.segmenter == "sam":
            return self._segment_with_proposer(
                forwarded.rgb, forwarded.working, config, timings,
                features=lambda: forwarded.features, embeddings=lambda: forwarded.embeddings,
            )
        rgb, working, embeddings = forwarded.rgb, forwarded.working, forwarded.embeddings
        cluster_map, cluster_ids = self._kmeans_segments(working, forwarded.features, config, timings)
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
            embeddings = _dense_embeddings(embedder, pixels, proxy_features)[0]
        result = self._name_region_map(working, embeddings, region_map, region_ids, config, timings)
        return self._finish(result, timings, config)

    def _kmeans_segments(
        self, working: np.ndarray, features: torch.Tensor, config: TAGConfig, timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 after the DINOv2 forward: k-means on the patch ``features`` (h, w, C), CRF, small
        regions; the compact cluster map at the working size and each cluster's original id."""
        height, width = working.shape[:2]
        clusters = config.clusters
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
        return cluster_map, cluster_ids

    def _segment_with_proposer(
        self,
        rgb: np.ndarray,
        working: np.ndarray,
        config: TAGConfig,
        timings: dict[str, float],
        *,
        features: Callable[[], torch.Tensor],
        embeddings: Callable[[], torch.Tensor],
    ) -> Segmentation:
        """Stage 1 as the proposer's masks (one label per pixel, smallest on top), then Stages 2 and 3.

        Pixels no mask covers take the k-means segments (``uncovered="fallback"``; DINOv2 and
        k-means run only when such pixels exist) or form one region named ``unknown_label``.
        ``features`` and ``embeddings`` give the DINOv2 features and dense CLIP embeddings when asked
        (forwarded already, or computed then).
        """
        proposer = self._proposer_for(config)
        with _timed(timings, "sam"):
            proposals = proposer(rgb)
        uncovered = config.clusters.uncovered
        fallback = None
        if uncovered == "fallback" and not proposals.masks.any(axis=0).all():
            cluster_map, cluster_ids = self._kmeans_segments(working, features(), config, timings)
            fallback = _resize_labels(cluster_ids[cluster_map], rgb.shape[:2])
        with _timed(timings, "regions"):  # without a fallback map no pixel is uncovered, or they stay unlabelled
            regions = regions_from_masks(proposals, uncovered="fallback" if fallback is not None else "unlabelled", fallback=fallback)
        origins = [(int(p), float(proposals.scores[p]) if p >= 0 else None) for p in regions.proposal]
        result = self._name_region_map(
            working, embeddings(), regions.label_map, np.arange(len(regions)), config, timings,
            origins=origins, unnamed=regions.unlabelled,
        )
        return self._finish(result, timings, config, proposer)

    def _name_region_map(
        self,
        working: np.ndarray,
        embeddings: torch.Tensor,
        region_map: np.ndarray,
        region_ids: np.ndarray,
        config: TAGConfig,
        timings: dict[str, float],
        *,
        origins: list[tuple[int, float | None]] | None = None,
        unnamed: int | None = None,
    ) -> Segmentation:
        """Stages 2 and 3 on a compact region map of the image's size, from the dense CLIP
        ``embeddings`` (h', w', D) of the working image: each region's embedding weighted by how much of each working pixel it covers, names, then the segments.

        ``origins`` gives each region's proposed mask (index and score; -1 and None for pixels no
        mask covered), ``unnamed`` a region that gets
        ``unknown_label`` instead of a name (the pixels no proposed mask covers).
        """
        with _timed(timings, "pooling"):
            coverage = np.stack([_area_resize(region_map == k, working.shape[:2]) for k in range(len(region_ids))])
            pooled = seg.pool_embeddings_weighted(embeddings, torch.from_numpy(coverage))
        namings = self._name(pooled, timings, config)
        if unnamed is not None:
            namings[unnamed] = Naming(config.controls.unknown_label, 0.0, [], [])
        with _timed(timings, "assemble"):
            return _assemble(region_map, region_ids, namings, pooled.numpy(), origins)

    def _proposer_for(self, config: TAGConfig) -> RegionProposer:
        """The region proposer, built from ``sam_model`` on first use, with this call's ``sam`` knobs."""
        with self._proposer_lock:
            if self.proposer is None:
                self.proposer = builder.build_proposer(self.config)
            proposer = self.proposer
        with_settings = getattr(proposer, "with_settings", None)  # a proposer with knobs (SamMaskGenerator)
        return with_settings(config.clusters.sam) if with_settings is not None else proposer

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
        """Stage 1's patch features of the working pixels, ``(B, h, w, C)`` as the extractor returns them."""
        return self.features(_fit_to_patches(pixels, self.features.patch_size))

    def _prepare(self, image: ImageSource, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The RGB image, its working-size copy and that copy as (1, 3, h, w) pixels in [0, 1]."""
        with _timed(timings, "load"):
            rgb = load_image(image, max_pixels=self.config.models.max_pixels)
        with _timed(timings, "preprocess"):
            working = working_image(rgb, self.config.models)
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

    def _finish(
        self, result: Segmentation, timings: dict[str, float], config: TAGConfig, proposer: RegionProposer | None = None
    ) -> Segmentation:
        result.settings = config.to_dict()
        result.models = self._models_with(proposer)
        result.timings = timings
        return result


@dataclasses.dataclass
class Forwarded:
    """One image after :meth:`TAG.forward`: the decoded image, its working-size copy, the DINOv2
    patch features ``(h, w, D)`` and the dense CLIP embeddings ``(h', w', D')`` (float32, CPU)."""

    rgb: np.ndarray
    working: np.ndarray
    features: torch.Tensor
    embeddings: torch.Tensor
    timings: dict[str, float]


def _same_size_groups(shapes: Sequence[torch.Size]) -> list[list[int]]:
    """Indices of equal shapes together, in order of first appearance (one forward per group)."""
    groups: dict[torch.Size, list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    return list(groups.values())


MODEL_KEYS = frozenset({"models", *(item.name for item in dataclasses.fields(ModelSettings))})
"""Settings that :meth:`TAG.__call__` refuses per call: the model section, whole or field by field."""


def working_size(height: int, width: int, size: int, keep_aspect_ratio: bool) -> tuple[int, int]:
    """The (height, width) the models see: ``size`` square, or the longer side ``size`` keeping the aspect."""
    if not keep_aspect_ratio:
        return (size, size)
    scale = size / max(height, width)
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def working_image(rgb: np.ndarray, models: ModelSettings) -> np.ndarray:
    """A copy of ``rgb`` at the working size the models see (bilinear; unchanged pixels if already that size)."""
    height, width = working_size(rgb.shape[0], rgb.shape[1], models.image_size, models.keep_aspect_ratio)
    return np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def _uses_proxy_features(embedder: DenseImageEmbedder) -> bool:
    """Whether ``embedder`` takes the patch features of Stage 1 (``uses_proxy_features``, false when absent)."""
    return bool(getattr(embedder, "uses_proxy_features", False))


def _dense_embeddings(
    embedder: DenseImageEmbedder, pixels: torch.Tensor, patch_features: torch.Tensor | None
) -> torch.Tensor:
    """Stage 2: ``(B, h, w, dim)`` float32 CPU embeddings of the working pixels; an embedder that uses
    proxy features gets Stage 1's ``patch_features`` of the same pixels (no second forward)."""
    fitted = _fit_to_patches(pixels, embedder.patch_size)
    if _uses_proxy_features(embedder):
        return embedder(fitted, proxy_features=patch_features).float().cpu()  # type: ignore[call-arg]
    return embedder(fitted).float().cpu()


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


def _assemble(
    cluster_map: np.ndarray,
    cluster_ids: np.ndarray,
    namings: list,
    embeddings: np.ndarray,
    origins: list[tuple[int, float | None]] | None = None,
) -> Segmentation:
    """Merge clusters that got the same name into one segment each, largest segment first.

    ``origins`` (per cluster: the proposed mask's index and score) become each segment's
    :class:`~tagseg.result.Region` list, from which the exports take their instances.
    """
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
                regions=[Region(*origins[c], cluster_map == c) for c in clusters] if origins is not None else [],
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

"""TAG as one callable: an image in, named segments out. Wires the stages; owns nothing else."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

from tagseg import builder
from tagseg import segments as seg
from tagseg.config import ModelSettings, TAGConfig, preset
from tagseg.controls import apply_controls
from tagseg.errors import ConfigError
from tagseg.image import ImageSource, load_image
from tagseg.interfaces import (
    DenseImageEmbedder,
    Hit,
    PatchFeatureExtractor,
    RegionProposer,
    Segmenter,
    SegmenterInput,
    Segments,
    TextDatabase,
    TextEncoder,
)
from tagseg.naming import CandidateEmbeddings, Naming, name_segments, retrieve
from tagseg.preprocess import area_resize, fit_to_patches, resize_labels, working_image, working_pixels
from tagseg.result import Region, Segment, Segmentation
from tagseg.segmenters import segmenter_entry
from tagseg.timing import timed, timed_shared

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
        self._segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()
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
        are fixed when the TAG is built. The same as ``finish(forward([image])[0])``.
        """
        call = self._resolve(overrides)  # bad overrides fail before any forward
        return self._finish_with(self._forward_with([image], call), call)[0]

    def decode(self, image: ImageSource) -> np.ndarray:
        """``image`` decoded and checked with this pipeline's limits (``max_pixels``): an RGB uint8
        array that :meth:`__call__` and :meth:`forward` take as it is, without a copy or a second decode."""
        return load_image(image, max_pixels=self.config.models.max_pixels)

    def forward(self, images: Sequence[ImageSource], **overrides: Any) -> list["Forwarded"]:
        """The backbone part of :meth:`__call__` for several images: decoding, resizing and both forwards.

        Images of the same working size share one forward per backbone (a batch; several images per
        forward pay on a GPU). :meth:`finish` does the rest of each image on the CPU, so a runner can
        finish one image while the next ones go through the backbones (:mod:`tagseg.stream`).
        ``overrides`` as for :meth:`__call__` (the ``embedding`` section chooses the dense method).
        The patch features run only when the segmenter needs them for every image or the dense
        method uses them as proxy features (one forward for both).
        """
        call = self._resolve(overrides)
        return self._forward_with(images, call)

    def finish(self, forwarded: "Forwarded", **overrides: Any) -> Segmentation:
        """The rest of :meth:`__call__` on one image's :meth:`forward` output: Stage 1 (the segmenter:
        k-means, CRF and small regions, or SAM's masks), pooling, naming and the result."""
        return self.finish_batch([forwarded], **overrides)[0]

    def finish_batch(self, forwarded: Sequence["Forwarded"], **overrides: Any) -> list[Segmentation]:
        """:meth:`finish` of several forwarded images at once, each with the result it gets alone:
        one Stage 1 call for all of them (with ``kmeans_backend`` or ``crf.backend`` ``"torch"``,
        one k-means and one CRF per image size, on the features' device) and one database search
        for all their segments; the rest of naming runs image by image."""
        return self._finish_with(forwarded, self._resolve(overrides))

    def name_regions(self, image: ImageSource, regions: np.ndarray, **overrides: Any) -> Segmentation:
        """Name regions given by the caller (Stages 2 and 3 only): no segmenter runs.

        ``regions`` is an integer (or boolean) map of the image's own size; every distinct value is
        one region, kept in ``Segment.cluster_ids``. Masks from another segmenter (SAM, an
        annotation tool) become such a map, e.g. ``np.argmax(np.stack([background, *masks]), 0)``.
        Regions with the same name are merged, as for proposed segments. ``overrides`` as for
        :meth:`__call__`.
        """
        call = self._resolve(overrides)
        rgb = self.decode(image)
        regions = np.asarray(regions)
        if regions.shape != rgb.shape[:2] or not (np.issubdtype(regions.dtype, np.integer) or regions.dtype == bool):
            raise ValueError(
                f"regions must be an integer map of the image's size {rgb.shape[:2]}, "
                f"not {regions.dtype} of shape {regions.shape}"
            )
        # no Stage 1 here: the patch features only when the dense method needs them
        forwarded = self._forward_with([rgb], dataclasses.replace(call, needs_patch_features=False))[0]
        timings = dict(forwarded.timings)
        segments = Segments(*seg.compact_labels(regions))
        pooled = self._pool(forwarded, segments, timings)
        with timed(timings, "naming"):
            retrieved = retrieve(pooled, self.database, call.config.naming)
        result = self._name_segments(forwarded, segments, pooled, retrieved, call.config, timings)
        return self._finish(result, timings, call.config)

    def _forward_with(self, images: Sequence[ImageSource], call: "_Call") -> list["Forwarded"]:
        """Decode and resize ``images``, then one forward per backbone and working size: the patch
        features when the call's segmenter needs them or its embedder uses them as proxy (kept on the
        forward's device when Stage 1 runs in torch, else float32 on the CPU), the dense embeddings always."""
        embedder = call.embedder
        with_features = call.needs_patch_features or _uses_proxy_features(embedder)
        prepared = []
        for image in images:
            timings: dict[str, float] = {}
            prepared.append((*self._prepare(image, timings), timings))
        features: list[torch.Tensor | None] = [None] * len(prepared)
        embeddings: list[torch.Tensor | None] = [None] * len(prepared)
        for group in _same_size_groups([pixels.shape for _, _, pixels, _ in prepared]):
            pixels = torch.cat([prepared[i][2] for i in group])
            start = time.perf_counter()
            patch_features = self._patch_features(pixels) if with_features else None
            middle = time.perf_counter()
            batch_embeddings = _dense_embeddings(embedder, pixels, patch_features)
            end = time.perf_counter()
            batch_features = None
            if patch_features is not None:
                batch_features = _stage1_features(patch_features, call.config.clusters.on_device)
            for position, i in enumerate(group):
                embeddings[i] = batch_embeddings[position]
                prepared[i][3]["embedder"] = (end - middle) / len(group)
                if batch_features is not None:
                    features[i] = batch_features[position]
                    prepared[i][3]["features"] = (middle - start) / len(group)
        return [
            Forwarded(rgb, working, features[i], embeddings[i], timings)  # type: ignore[arg-type]
            for i, (rgb, working, _, timings) in enumerate(prepared)
        ]

    def _finish_with(self, forwarded: Sequence["Forwarded"], call: "_Call") -> list[Segmentation]:
        """Stage 1 of all ``forwarded`` images by the call's segmenter, one database search for all
        their segments, then each image's naming and result."""
        if not forwarded:
            return []
        timings = [dict(image.timings) for image in forwarded]
        on_device = call.config.clusters.on_device
        inputs = [
            SegmenterInput(image.rgb, image.working, self._patch_features_of(image, image_timings, on_device), image_timings)
            for image, image_timings in zip(forwarded, timings)
        ]
        segments = call.segmenter.segment(inputs, call.config.clusters)
        pooled = [self._pool(*parts) for parts in zip(forwarded, segments, timings)]
        with timed_shared(timings, "naming"):
            hits = retrieve(torch.cat(pooled), self.database, call.config.naming)
        starts = np.cumsum([0, *(len(image_pooled) for image_pooled in pooled)])
        return [
            self._finish(
                self._name_segments(image, image_segments, image_pooled, hits[start:end], call.config, image_timings),
                image_timings, call.config, image_segments.proposer,
            )
            for image, image_segments, image_pooled, start, end, image_timings
            in zip(forwarded, segments, pooled, starts[:-1], starts[1:], timings)
        ]

    def _patch_features_of(
        self, forwarded: "Forwarded", timings: dict[str, float], on_device: bool
    ) -> Callable[[], torch.Tensor]:
        """The forwarded image's patch features: those of its forward, else computed once when first
        asked for (on the extractor's device when ``on_device``, else float32 on the CPU)."""
        if forwarded.features is not None:
            return lambda: forwarded.features  # type: ignore[return-value]

        @functools.cache
        def computed() -> torch.Tensor:
            with timed(timings, "features"):
                return _stage1_features(self._patch_features(working_pixels(forwarded.working))[0], on_device)

        return computed

    def _pool(self, forwarded: "Forwarded", segments: Segments, timings: dict[str, float]) -> torch.Tensor:
        """Stage 2: each segment's embedding ``(n, D)`` pooled from the dense embeddings of the working image.

        A label map at the working size is pooled as the mean over its pixels; one at the image's
        size with the weight of how much of each working pixel a label covers (no small region
        disappears).
        """
        working_size = forwarded.working.shape[:2]
        count = len(segments.ids)
        with timed(timings, "pooling"):
            if segments.label_map.shape == working_size:
                return seg.pool_embeddings(forwarded.embeddings, segments.label_map, count)
            coverage = np.stack([area_resize(segments.label_map == k, working_size) for k in range(count)])
            return seg.pool_embeddings_weighted(forwarded.embeddings, torch.from_numpy(coverage))

    def _name_segments(
        self,
        forwarded: "Forwarded",
        segments: Segments,
        pooled: torch.Tensor,
        retrieved: list[list[Hit]],
        config: TAGConfig,
        timings: dict[str, float],
    ) -> Segmentation:
        """Stage 3 on Stage 1's ``segments`` with their ``pooled`` embeddings and ``retrieved`` texts,
        then the segments at the image's size. The ``unnamed`` label is named ``unknown_label``."""
        namings = self._name(pooled, retrieved, timings, config)
        if segments.unnamed is not None:
            namings[segments.unnamed] = Naming(config.controls.unknown_label, 0.0, [], [])
        with timed(timings, "assemble"):
            label_map = resize_labels(segments.label_map, forwarded.rgb.shape[:2])
            return _assemble(label_map, segments.ids, namings, pooled.numpy(), segments.origins)

    def _region_proposer(self) -> RegionProposer:
        """The region proposer: the one given, else built from ``sam_model`` on first use (thread-safe, once)."""
        with self._lock:
            if self.proposer is None:
                self.proposer = builder.build_proposer(self.config)
            return self.proposer

    def settings_for(self, **overrides: Any) -> TAGConfig:
        """The settings a call with these per-call ``overrides`` runs with (``None`` values ignored).

        Raises :class:`~tagseg.errors.ConfigError` for unknown or invalid settings, for model
        settings, which only :meth:`from_pretrained` can change, and for embedding settings the
        embedder cannot run (a window that is not whole patches, an embedder without dense methods).
        """
        return self._resolve(overrides).config

    def _resolve(self, overrides: dict[str, Any]) -> "_Call":
        """A call's settings, its dense embedder and its segmenter, each resolved once (see :meth:`settings_for`)."""
        fixed = sorted(key for key, value in overrides.items() if value is not None and key in MODEL_KEYS)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change per call: the models are loaded with them. "
                f"Build another pipeline, e.g. TAG.from_pretrained(config.replace({fixed[0]}=...))."
            )
        config = self.config.replace(**overrides) if overrides else self.config
        segmenter = self._segmenter_for(config.clusters.segmenter)
        return _Call(config, self._embedder_for(config), segmenter, segmenter.needs_patch_features(config.clusters))

    def _segmenter_for(self, name: str) -> Segmenter:
        """The registered segmenter ``name``, made on first use and kept (its models load when it first runs)."""
        with self._lock:
            if name not in self._segmenters:
                self._segmenters[name] = segmenter_entry(name).build(self._region_proposer)
            return self._segmenters[name]

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
        return self.features(fit_to_patches(pixels, self.features.patch_size))

    def _prepare(self, image: ImageSource, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """The RGB image (an array from :meth:`decode` as it is), its working-size copy and that copy as model input."""
        with timed(timings, "load"):
            rgb = load_image(image, max_pixels=self.config.models.max_pixels, copy=False)
        with timed(timings, "preprocess"):
            working = working_image(rgb, self.config.models)
            pixels = working_pixels(working)
        return rgb, working, pixels

    def _name(
        self, pooled: torch.Tensor, retrieved: list[list[Hit]], timings: dict[str, float], config: TAGConfig
    ) -> list[Naming]:
        """Stage 3 on segment embeddings and their ``retrieved`` texts, then the optional naming controls."""
        candidate_embeddings = self.candidate_embeddings
        if config.naming.prompt_template != candidate_embeddings.template:  # a per-call template: no shared cache
            candidate_embeddings = CandidateEmbeddings(self.text_encoder, config.naming.prompt_template)
        with timed(timings, "naming"):
            namings = name_segments(pooled, self.database, candidate_embeddings, config.naming, retrieved)
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
    """One image after :meth:`TAG.forward`: the decoded image, its working-size copy, the patch
    features ``(h, w, C)`` (``None`` when the forward did not need them; :meth:`TAG.finish` computes
    them if its segmenter asks; float32, on the forward's device when Stage 1 runs in torch, else on
    the CPU) and the dense CLIP embeddings ``(h', w', D)`` (float32, CPU)."""

    rgb: np.ndarray
    working: np.ndarray
    features: torch.Tensor | None
    embeddings: torch.Tensor
    timings: dict[str, float]


@dataclasses.dataclass(frozen=True)
class _Call:
    """One call's resolved parts: its settings, dense embedder and segmenter, and whether that
    segmenter needs every image's patch features."""

    config: TAGConfig
    embedder: DenseImageEmbedder
    segmenter: Segmenter
    needs_patch_features: bool


def _same_size_groups(shapes: Sequence[torch.Size]) -> list[list[int]]:
    """Indices of equal shapes together, in order of first appearance (one forward per group)."""
    groups: dict[torch.Size, list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    return list(groups.values())


MODEL_KEYS = frozenset({"models", *(item.name for item in dataclasses.fields(ModelSettings))})
"""Settings that :meth:`TAG.__call__` refuses per call: the model section, whole or field by field."""


def _stage1_features(features: torch.Tensor, on_device: bool) -> torch.Tensor:
    """Patch features as Stage 1 takes them: float32, on their device when ``on_device``
    (:attr:`~tagseg.config.ClusterSettings.on_device`), else on the CPU."""
    return features.float() if on_device else features.float().cpu()


def _uses_proxy_features(embedder: DenseImageEmbedder) -> bool:
    """Whether ``embedder`` takes the patch features of Stage 1 (``uses_proxy_features``, false when absent)."""
    return bool(getattr(embedder, "uses_proxy_features", False))


def _dense_embeddings(
    embedder: DenseImageEmbedder, pixels: torch.Tensor, patch_features: torch.Tensor | None
) -> torch.Tensor:
    """Stage 2: ``(B, h, w, dim)`` float32 CPU embeddings of the working pixels; an embedder that uses
    proxy features gets Stage 1's ``patch_features`` of the same pixels (no second forward)."""
    fitted = fit_to_patches(pixels, embedder.patch_size)
    if _uses_proxy_features(embedder):
        return embedder(fitted, proxy_features=patch_features).float().cpu()  # type: ignore[call-arg]
    return embedder(fitted).float().cpu()


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

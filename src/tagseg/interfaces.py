"""The four seams of the pipeline, and the write half of the database seam.

Real models (``transformers`` backbones), tiny random models (tests) and the toy world
(:mod:`tagseg.toy`) all implement these small protocols, so each stage can be swapped and
tested alone.

Pixel convention shared by both image seams: ``pixels`` is a float tensor of shape
``(B, 3, H, W)`` holding RGB values in ``[0, 1]``; ``H`` and ``W`` are multiples of the
implementation's ``patch_size``. Each implementation applies its own normalisation (mean/std)
so that callers never need to know which model they feed.

An optional fifth seam, :class:`RegionProposer`, replaces Stage 1's k-means segments with masks
from another segmenter (SAM); it takes the RGB image itself, as such models do their own resizing.

Stage 1 itself is a :class:`Segmenter` (k-means, or a region proposer's masks), chosen by the
``segmenter`` setting from the registry of :mod:`tagseg.segmenters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from tagseg.config import ClusterSettings


@runtime_checkable
class PatchFeatureExtractor(Protocol):
    """Per-patch features used to find segment candidates (DINOv2 in the paper)."""

    patch_size: int
    model_id: str

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return features of shape ``(B, H // patch_size, W // patch_size, C)``."""
        ...


@runtime_checkable
class DenseImageEmbedder(Protocol):
    """Per-patch embeddings in the joint image-text space (CLIP + GEM in the paper).

    Two optional parts, which the pipeline looks for and does without:

    * ``uses_proxy_features`` (a bool, false when absent): when true, the embedder is called as
      ``embedder(pixels, proxy_features=features)`` with the :class:`PatchFeatureExtractor`'s
      output for the same image, ``(B, h', w', C)`` on that extractor's own patch grid (Stage 1's
      forward, not a second one); the embedder resamples it to its grid (ProxyCLIP's attention).
    * ``with_method(method, method_settings, sliding_window)``: the same model with another dense
      method, for per-call ``dense_method`` settings (:class:`~tagseg.backbones.clip.DenseCLIP`).
    """

    patch_size: int
    dim: int
    model_id: str

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return embeddings of shape ``(B, H // patch_size, W // patch_size, dim)``, not normalised.

        Embedders with ``uses_proxy_features`` also take ``proxy_features=`` (see the class docstring).
        """
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """Text tower of the joint space (CLIP's in the paper)."""

    dim: int
    model_id: str

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Return L2-normalised embeddings of shape ``(len(texts), dim)`` (float32, CPU)."""
        ...


@dataclass(frozen=True)
class Hit:
    """One retrieved database entry."""

    text: str
    similarity: float
    id: int = -1
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class TextDatabase(Protocol):
    """A searchable collection of texts embedded with a :class:`TextEncoder`."""

    dim: int
    model_id: str

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """For each L2-normalised query row of ``(Q, dim)``, the ``k`` most similar texts, best first.

        Hits carry their stored vector when the database can give it (used to drop near-duplicates).
        """
        ...


@dataclass(frozen=True)
class UpdateReport:
    """What an add did: texts stored, and texts skipped as duplicates, blank or unreadable."""

    added: int = 0
    duplicates: int = 0
    blank: int = 0
    unreadable: int = 0


@runtime_checkable
class UpdatableTextDatabase(TextDatabase, Protocol):
    """A :class:`TextDatabase` that takes added and removed texts in place (the service's database writes).

    ``template`` is the prompt each stored text was embedded with (``"{}"``: the text itself).
    """

    template: str

    def add_texts(self, texts: Iterable[str], encoder: TextEncoder, *, source: str = "added") -> UpdateReport:
        """Embed ``template.format(text)`` with ``encoder`` and store the texts (stripped; blank and stored ones skipped)."""
        ...

    def remove(self, texts: Iterable[str] = ()) -> int:
        """Remove the stored ``texts``; returns how many were removed."""
        ...


@dataclass(frozen=True)
class MaskProposals:
    """Masks that a segmenter proposes for one image, possibly overlapping.

    ``masks`` is a boolean array ``(N, H, W)`` of the image's own size; ``scores`` is ``(N,)``, higher
    meaning more confident (SAM's predicted IoU; 1.0 where a segmenter has no notion of confidence).
    :func:`tagseg.segmenters.regions.regions_from_masks` turns them into one label per pixel.
    """

    masks: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be a boolean (N, H, W) array, not {self.masks.dtype} {self.masks.shape}")
        if self.scores.shape != self.masks.shape[:1]:
            raise ValueError(f"need one score per mask: {self.masks.shape[0]} masks, scores {self.scores.shape}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@runtime_checkable
class RegionProposer(Protocol):
    """Stage 1 as masks: proposes regions of an image without naming them (SAM, the toy world's truth)."""

    model_id: str

    def __call__(self, image: np.ndarray) -> MaskProposals:
        """Masks of the RGB image ``image`` (``(H, W, 3)`` uint8), at its own size."""
        ...


@dataclass
class SegmenterInput:
    """One image as Stage 1 sees it, after :meth:`tagseg.TAG.forward`.

    ``rgb`` is the decoded image ``(H, W, 3)`` uint8 and ``working`` its copy at the working size
    ``(h, w, 3)``. ``patch_features()`` gives the :class:`PatchFeatureExtractor`'s features of the
    working image, ``(h', w', C)`` float32, on the extractor's device when the cluster settings run
    Stage 1 in torch (:attr:`~tagseg.config.ClusterSettings.on_device`), else on the CPU: the batch's
    forward when it ran them, else computed on the first call (a segmenter that needs them only
    sometimes calls it only then).
    A segmenter adds the seconds of its own stages to ``timings``.
    """

    rgb: np.ndarray
    working: np.ndarray
    patch_features: Callable[[], torch.Tensor]
    timings: dict[str, float]


@dataclass(frozen=True)
class Segments:
    """Stage 1's segments of one image: one label per pixel, and where each label came from.

    ``label_map`` is ``(h, w)`` int32 with labels ``0..n-1``, each owning at least one pixel, at the
    working size or at the image's own size. ``ids`` (``(n,)``) is what results record for each
    label (``Segment.cluster_ids``, ``Segmentation.cluster_map``): the k-means cluster, or the
    region's index. ``origins`` gives each label's proposed mask (its index and score; -1 and
    ``None`` for pixels no mask covered), which become ``Segment.regions``; ``unnamed`` is a label
    named ``unknown_label`` without retrieval; ``proposer`` the model that proposed the masks
    (named in the result's ``models``).
    """

    label_map: np.ndarray
    ids: np.ndarray
    origins: list[tuple[int, float | None]] | None = None
    unnamed: int | None = None
    proposer: RegionProposer | None = None


@runtime_checkable
class Segmenter(Protocol):
    """Stage 1: segment candidates of a batch of images (k-means on patch features, SAM's masks...)."""

    def needs_patch_features(self, clusters: ClusterSettings) -> bool:
        """Whether every image needs its patch features; :meth:`tagseg.TAG.forward` then runs the
        feature extractor with the batch's forward, else only on demand (``SegmenterInput.patch_features``)."""
        ...

    def segment(self, images: Sequence[SegmenterInput], clusters: ClusterSettings) -> list[Segments]:
        """The segments of each image, in order, with the ``clusters`` settings of the call."""
        ...

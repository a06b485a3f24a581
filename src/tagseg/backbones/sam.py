"""Segment Anything's automatic mask generation with a ``transformers`` ``SamModel``.

The generator follows segment-anything's ``SamAutomaticMaskGenerator``: prompt SAM with a regular
grid of single points over the image (and, optionally, over overlapping crops of it), keep each
point's three candidate masks that are confident (predicted IoU) and stable (they change little
when the logit cutoff moves), drop masks cut off at a crop's inner edge, remove duplicates with
box non-maximum suppression within each crop and then across crops (preferring masks from smaller
crops), and optionally remove small islands and holes. Every knob is in :class:`MaskGenerationOptions`
(segment-anything's defaults); tagseg's settings for them are ``[clusters.sam]``
(:class:`tagseg.config.SamSettings`), which :mod:`tagseg.segmenters.sam` hands on.

``transformers`` supplies the crops and the point grid (``SamImageProcessorPil.generate_crop_boxes``,
as its ``mask-generation`` pipeline uses them), the image preprocessing and the mask upscaling
(``post_process_masks``). The filtering is done here on boolean masks, and the box NMS is
:func:`tagseg.segmenters.boxes.box_nms`, because the processor's own post-processing needs torchvision.

Checkpoints are any ``SamModel``: ``facebook/sam-vit-base``, ``-large``, ``-huge``, SlimSAM
(``Zigeng/SlimSAM-uniform-77``) or a local directory written by ``save_pretrained``. SAM 2
(``Sam2Model``) is in the installed ``transformers`` but its image processor needs torchvision, so it
is not supported here yet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from tagseg.backbones.base import checked_model_config, load_model
from tagseg.backbones.hub import ModelSource, load_pretrained, source_name
from tagseg.interfaces import MaskProposals
from tagseg.masks import connected_components
from tagseg.segmenters.boxes import box_nms, mask_boxes

if TYPE_CHECKING:
    from transformers import SamImageProcessorPil, SamModel

__all__ = ["MaskGenerationOptions", "SamMaskGenerator", "stability_score"]


@dataclass(frozen=True)
class MaskGenerationOptions:
    """The knobs of automatic mask generation, with segment-anything's defaults (docs/sam.md explains each)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_threshold: float = 0.88
    stability_threshold: float = 0.95
    stability_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_threshold: float = 0.7
    crop_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_nms_threshold: float = 0.7
    min_region_area: int = 0

_CROP_EDGE_TOLERANCE = 20.0
"""Pixels: a box this close to a crop's inner edge (not the image's) belongs to a cut-off mask."""


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of each mask binarised at ``mask_threshold + offset`` and at ``mask_threshold - offset``.

    The first mask lies inside the second, so the IoU is the ratio of their areas. ``logits`` is
    ``(N, H, W)``; a mask empty at both cutoffs scores 0.
    """
    strict = _count_above(logits, mask_threshold + offset)
    loose = _count_above(logits, mask_threshold - offset)
    return strict / loose.clamp_min(1)


def _count_above(logits: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Pixels above ``cutoff`` per mask of ``(N, H, W)``; counting rows in int16 first is several times faster."""
    return (logits > cutoff).sum(dim=-1, dtype=torch.int16).sum(dim=-1, dtype=torch.int32)


class SamMaskGenerator:
    """A :class:`~tagseg.interfaces.RegionProposer` that runs SAM's automatic mask generation.

    Build it with :meth:`from_pretrained`; calling it with an RGB image (``(H, W, 3)`` uint8) returns
    the masks with their predicted IoU as scores, most confident first. ``options`` are the knobs of
    :class:`MaskGenerationOptions` by name.
    """

    def __init__(self, model: SamModel, processor: SamImageProcessorPil, *, model_id: str = "sam", **options: Any) -> None:
        self.model = model.eval()
        self.processor = processor
        self.options = MaskGenerationOptions(**options)
        self.model_id = model_id
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = torch.float32,
        **options: Any,
    ) -> "SamMaskGenerator":
        """Load a ``SamModel`` checkpoint and its image processor (local cache first, never a traceback).

        ``dtype`` is a torch dtype or a dtype setting (``"auto"``: bfloat16 where it runs natively);
        ``options`` are knobs of :class:`MaskGenerationOptions`.
        """
        from transformers import SamImageProcessorPil, SamModel

        checked_model_config(source, {"sam"}, "Segment Anything", "facebook/sam-vit-base")
        model = load_model(SamModel, source, device=device, dtype=dtype)
        processor = load_pretrained(SamImageProcessorPil, source)
        return cls(model, processor, model_id=source_name(source), **options)

    def with_options(self, **options: Any) -> "SamMaskGenerator":
        """This generator with some knobs changed, sharing the loaded model (itself when nothing changes)."""
        changed = dataclasses.replace(self.options, **options)
        if changed == self.options:
            return self
        return SamMaskGenerator(self.model, self.processor, model_id=self.model_id, **dataclasses.asdict(changed))

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> MaskProposals:
        """The masks of an RGB image (``(H, W, 3)`` uint8) at its size, with predicted IoU, most confident first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB image of shape (H, W, 3) and dtype uint8, got {image.dtype} {image.shape}")
        options = self.options
        height, width = image.shape[:2]
        crop_boxes, points, crops, _ = self.processor.generate_crop_boxes(
            image,
            target_size=self.processor.size.longest_edge,
            crop_n_layers=options.crop_layers,
            overlap_ratio=options.crop_overlap_ratio,
            points_per_crop=options.points_per_side,
        )
        masks, scores, boxes, crop_areas = [], [], [], []
        for crop_index, (crop_box, crop) in enumerate(zip(crop_boxes.round().long().tolist(), crops)):
            crop_masks, crop_scores = self._crop_masks(crop, crop_box, (height, width), points[0, :, crop_index])
            crop_masks = _uncrop(crop_masks, crop_box, (height, width))
            crop_boxes_found = mask_boxes(crop_masks)
            keep = box_nms(crop_boxes_found, crop_scores, options.box_nms_threshold)
            masks.append(crop_masks[keep])
            scores.append(crop_scores[keep])
            boxes.append(crop_boxes_found[keep])
            crop_area = (crop_box[2] - crop_box[0]) * (crop_box[3] - crop_box[1])
            crop_areas.append(torch.full((len(keep),), float(crop_area)))
        all_masks, all_scores, all_boxes = torch.cat(masks), torch.cat(scores), torch.cat(boxes)
        if len(crops) > 1:  # the same object found in several crops: keep the one from the smallest crop
            keep = box_nms(all_boxes, 1.0 / torch.cat(crop_areas), options.crop_nms_threshold)
            all_masks, all_scores = all_masks[keep], all_scores[keep]
        if options.min_region_area > 0:
            all_masks, all_scores = _remove_small_regions(all_masks, all_scores, options)
        order = torch.sort(all_scores, descending=True, stable=True).indices
        return MaskProposals(masks=all_masks[order].numpy(), scores=all_scores[order].numpy().astype(np.float32))

    def _crop_masks(
        self, crop: np.ndarray, crop_box: list[int], image_size: tuple[int, int], points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks (at the crop's size) that pass the quality filters, and their predicted IoU."""
        options = self.options
        inputs = self.processor(images=crop, return_tensors="pt")
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        crop_height, crop_width = crop.shape[-2:]
        masks = [torch.zeros((0, crop_height, crop_width), dtype=torch.bool)]
        scores = [torch.zeros(0)]
        for start in range(0, len(points), options.points_per_batch):
            batch = points[start : start + options.points_per_batch].float().to(self.device)
            output = self.model(
                image_embeddings=embeddings,
                input_points=batch[None, :, None, :],
                input_labels=torch.ones((1, len(batch), 1), dtype=torch.long, device=self.device),
                multimask_output=True,
            )
            predicted_iou = output.iou_scores[0].float().cpu().flatten()
            low_resolution = output.pred_masks[0].float().cpu().flatten(0, 1)  # (points * 3, h, w)
            if options.pred_iou_threshold > 0:  # before upscaling, which costs most
                confident = predicted_iou > options.pred_iou_threshold
                predicted_iou, low_resolution = predicted_iou[confident], low_resolution[confident]
            if len(low_resolution) == 0:
                continue
            logits = self.processor.post_process_masks(
                [low_resolution[:, None]], inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
            )[0][:, 0]
            keep = torch.ones(len(logits), dtype=torch.bool)
            if options.stability_threshold > 0:
                stability = stability_score(logits, options.mask_threshold, options.stability_offset)
                keep = stability >= options.stability_threshold
            binary = logits[keep] > options.mask_threshold
            predicted_iou = predicted_iou[keep]
            inside = ~_cut_by_crop_edge(mask_boxes(binary), crop_box, image_size)
            masks.append(binary[inside])
            scores.append(predicted_iou[inside])
        return torch.cat(masks), torch.cat(scores)


def _cut_by_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes (in crop coordinates) that touch an edge of the crop that is not an edge of the image."""
    left, top = crop_box[0], crop_box[1]
    shifted = boxes + torch.tensor([left, top, left, top], dtype=boxes.dtype)
    crop = torch.tensor(crop_box, dtype=boxes.dtype)
    image = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=boxes.dtype)
    near_crop = torch.isclose(shifted, crop[None], atol=_CROP_EDGE_TOLERANCE, rtol=0)
    near_image = torch.isclose(shifted, image[None], atol=_CROP_EDGE_TOLERANCE, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def _uncrop(masks: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> torch.Tensor:
    """Masks of a crop placed into zero masks of the whole image."""
    left, top, right, bottom = crop_box
    height, width = image_size
    return F.pad(masks, (left, width - right, top, height - bottom), value=False)


def _remove_small_regions(
    masks: torch.Tensor, scores: torch.Tensor, options: MaskGenerationOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill holes and drop islands smaller than ``min_region_area``; then NMS, unchanged masks first."""
    cleaned, unchanged = [], []
    for mask in masks.numpy():
        filled, holes_changed = _drop_small_components(mask, options.min_region_area, holes=True)
        kept, islands_changed = _drop_small_components(filled, options.min_region_area, holes=False)
        cleaned.append(torch.from_numpy(kept))
        unchanged.append(not (holes_changed or islands_changed))
    if not cleaned:
        return masks, scores
    cleaned_masks = torch.stack(cleaned)
    keep = box_nms(mask_boxes(cleaned_masks), torch.tensor(unchanged, dtype=torch.float32), options.box_nms_threshold)
    return cleaned_masks[keep], scores[keep]


def _drop_small_components(mask: np.ndarray, min_area: int, *, holes: bool) -> tuple[np.ndarray, bool]:
    """Remove 8-connected islands (or fill holes, ``holes=True``) smaller than ``min_area`` pixels.

    Islands: when every island is small, the largest one stays. Returns the mask and whether it changed.
    """
    components, count = connected_components(~mask if holes else mask)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(components, small), True
    keep = np.setdiff1d(np.arange(1, count + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(components, keep), True

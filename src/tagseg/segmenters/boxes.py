"""Boxes of masks and greedy box non-maximum suppression, in torch.

Boxes are ``(x0, y0, x1, y1)`` float tensors in pixels; a box of a mask runs from its first to its
last covered column and row (inclusive indices), and its area is ``(x1 - x0) * (y1 - y0)``, the
convention of ``torchvision.ops`` and segment-anything. :func:`box_nms` uses ``torchvision.ops.nms``
when torchvision is installed and an equivalent torch-only loop otherwise (torchvision cannot be
installed here without a CUDA build of torch).
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["box_iou", "box_nms", "mask_boxes"]


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` boxes of boolean masks ``(N, H, W)``; an empty mask gets ``(0, 0, 0, 0)``."""
    count, height, width = masks.shape
    if count == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, columns = masks.any(dim=2), masks.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    column_index = torch.arange(width, device=masks.device)
    y0 = torch.where(rows, row_index, height).amin(dim=1)
    y1 = torch.where(rows, row_index, -1).amax(dim=1)
    x0 = torch.where(columns, column_index, width).amin(dim=1)
    x1 = torch.where(columns, column_index, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` intersection over union of two sets of boxes; 0 where the union has no area."""
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    top_left = torch.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = torch.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = (bottom_right - top_left).clamp_min(0).prod(dim=2)
    union = area_first[:, None] + area_second[None, :] - overlap
    return torch.where(union > 0, overlap / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, highest score first.

    Walking the boxes from the highest score down, a box is kept unless a box already kept overlaps
    it with IoU above ``iou_threshold``. Equal scores keep their input order.
    """
    if _HAS_TORCHVISION:
        from torchvision.ops import nms

        return nms(boxes.float(), scores.float(), iou_threshold)
    return _torch_nms(boxes.float(), scores.float(), iou_threshold)


def _torch_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for position in range(len(order)):
        if not suppressed[position]:
            kept.append(position)
            suppressed |= overlaps[position]
    return order[torch.tensor(kept, dtype=torch.long)]


_HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

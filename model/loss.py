"""Training loss of the grid detector, returned as named terms so training can log each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model.boxes import GridOutput, GridTargets


@dataclass(frozen=True)
class LossWeights:
    objectness: float = 1.0
    box: float = 1.0
    giou: float = 2.0
    classification: float = 1.0


# The names of the terms :func:`detection_loss` returns, in the order training logs them.
LOSS_TERMS = ("total", "objectness", "box", "giou", "class")


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each box in ``a (..., 4)`` with the box at the same index in ``b``, xyxy."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-6)


def iou_loss_per_box(pred: Tensor, target: Tensor, kind: str = "giou", eps: float = 1e-7) -> Tensor:
    """The GIoU or CIoU loss of each pair of xyxy boxes, ``(..., 4)`` -> ``(...)``.

    The same values as torchvision's ``generalized_box_iou_loss`` / ``complete_box_iou_loss``
    (``reduction="none"``; tested), written with clamps where theirs indexes by a mask of
    overlapping pairs: a mask index waits for the device to say how many pairs there are (a
    host sync each step) and breaks ``torch.compile``'s graph, which this does not."""
    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    inter = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0) * (
        torch.min(y2, y2g) - torch.max(y1, y1g)
    ).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    enclosing_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclosing_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    if kind == "giou":
        area = enclosing_w * enclosing_h
        return 1 - (iou - (area - union) / (area + eps))
    if kind != "ciou":
        raise ValueError(f"unknown IoU loss {kind!r}; choose giou or ciou")
    diagonal = enclosing_w**2 + enclosing_h**2 + eps
    centres = ((x1 + x2 - x1g - x2g) / 2) ** 2 + ((y1 + y2 - y1g - y2g) / 2) ** 2
    v = (4 / math.pi**2) * (torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return 1 - iou + centres / diagonal + alpha * v


def detection_loss(
    output: GridOutput,
    targets: GridTargets,
    weights: LossWeights = LossWeights(),
    iou_objectness: bool = True,
    iou_loss: str = "giou",
) -> dict[str, Tensor]:
    """Objectness over all cells; box, GIoU and class terms over the positive cells.

    The objectness target of a positive cell is the IoU of its predicted box with its object
    (``iou_objectness``, detached) or 1; every other cell's is 0. Every term is a sum normalised
    by the number of positive cells in the batch (at least one), so the loss stays finite, and
    objectness still trains, on images with no objects. Terms are computed on every cell and
    masked, so the step never waits on the GPU. ``iou_loss``: ``giou`` (generalized IoU) or
    ``ciou`` (complete IoU: also the centre distance and the aspect ratio), as torchvision defines
    them (:func:`iou_loss_per_box`), logged as the ``giou`` term either way. Returns
    ``{"objectness", "box", "giou", "class", "total"}`` (scalars).
    """
    positive = targets.positive.float()
    normaliser = positive.sum().clamp(min=1.0)
    if iou_objectness:
        quality = paired_iou(output.boxes_xyxy.detach(), targets.boxes_xyxy).clamp(0.0, 1.0)
        objectness_target = positive * quality
    else:
        objectness_target = positive
    objectness = (
        F.binary_cross_entropy_with_logits(output.objectness, objectness_target, reduction="sum") / normaliser
    )
    pred_coded = torch.cat([torch.tanh(output.deltas[..., :2]), output.deltas[..., 2:]], dim=-1)
    target_coded = torch.cat([torch.tanh(targets.deltas[..., :2]), targets.deltas[..., 2:]], dim=-1)
    box_per_cell = F.smooth_l1_loss(pred_coded, target_coded, reduction="none", beta=0.1).sum(-1)
    box = (box_per_cell * positive).sum() / normaliser
    giou_per_cell = iou_loss_per_box(output.boxes_xyxy.float(), targets.boxes_xyxy, iou_loss)
    giou = (giou_per_cell * positive).sum() / normaliser
    class_per_cell = F.cross_entropy(
        output.class_logits.flatten(0, 1), targets.labels.clamp(min=0).flatten(), reduction="none"
    ).view_as(positive)
    classification = (class_per_cell * positive).sum() / normaliser
    total = (
        weights.objectness * objectness
        + weights.box * box
        + weights.giou * giou
        + weights.classification * classification
    )
    return {
        "objectness": objectness,
        "box": box,
        "giou": giou,
        "class": classification,
        "total": total,
    }

"""Training loss of the grid detector, returned as named terms so training can log each."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from model.boxes import GridOutput, GridTargets


@dataclass(frozen=True)
class LossWeights:
    objectness: float = 1.0
    box: float = 1.0
    giou: float = 2.0
    classification: float = 1.0


def detection_loss(
    output: GridOutput, targets: GridTargets, weights: LossWeights = LossWeights()
) -> dict[str, Tensor]:
    """Objectness over all cells; box, GIoU and class terms over the responsible cells.

    Every term is a sum normalised by the number of responsible cells in the batch (at least
    one), so the loss stays finite, and the objectness term still trains, on images with no
    objects. Returns ``{"objectness", "box", "giou", "class", "total"}`` (scalars).
    """
    positive = targets.positive
    normaliser = positive.sum().clamp(min=1).float()

    objectness = (
        F.binary_cross_entropy_with_logits(output.objectness, positive.float(), reduction="sum") / normaliser
    )
    if positive.any():
        pred = output.deltas[positive]  # (P, 4)
        target = targets.deltas[positive]
        pred_coded = torch.cat([torch.tanh(pred[:, :2]), pred[:, 2:]], dim=1)
        target_coded = torch.cat([torch.tanh(target[:, :2]), target[:, 2:]], dim=1)
        box = F.smooth_l1_loss(pred_coded, target_coded, reduction="sum", beta=0.1) / normaliser
        giou = (
            generalized_box_iou_loss(
                output.boxes_xyxy[positive], targets.boxes_xyxy[positive], reduction="sum"
            )
            / normaliser
        )
        classification = (
            F.cross_entropy(output.class_logits[positive], targets.labels[positive], reduction="sum")
            / normaliser
        )
    else:
        # Keep the graph connected so DDP and AMP see every parameter used.
        zero = output.deltas.sum() * 0.0 + output.class_logits.sum() * 0.0
        box = giou = classification = zero
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

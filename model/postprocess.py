"""Post-processing: raw grid -> scored, thresholded, NMS-filtered boxes in original pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from model.boxes import GridOutput
from model.config import DetectParams
from model.letterbox import Letterbox

# Candidates kept per image before NMS; bounds NMS cost when the threshold is near zero.
PRE_NMS_TOP_K = 1000


@dataclass(frozen=True)
class Detections:
    """Detections of one image, sorted by score (highest first).

    boxes_xyxy: ``(N, 4)`` float32 in original-image pixels, ``0 <= x1 < x2 <= W``,
    ``0 <= y1 < y2 <= H``. scores: ``(N,)`` float32 in [0, 1]. labels: ``(N,)`` int64 class ids.
    """

    boxes_xyxy: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())


def class_scores(output: GridOutput) -> Tensor:
    """``(B, H*W, C)`` score per cell and class: sigmoid(objectness) * softmax(class logits)."""
    return torch.sigmoid(output.objectness)[..., None] * torch.softmax(output.class_logits, dim=-1)


def postprocess_image(
    boxes_xyxy: Tensor, scores: Tensor, placement: Letterbox, params: DetectParams
) -> Detections:
    """One image: boxes ``(K, 4)`` in input pixels and scores ``(K, C)`` -> :class:`Detections`."""
    keep = scores >= params.score_threshold  # (K, C)
    if params.class_ids is not None:
        keep_class = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
        keep_class[list(params.class_ids)] = True
        keep &= keep_class
    cell, label = torch.nonzero(keep, as_tuple=True)
    candidate_scores = scores[cell, label]
    if candidate_scores.numel() > PRE_NMS_TOP_K:
        top = torch.topk(candidate_scores, PRE_NMS_TOP_K).indices
        cell, label, candidate_scores = cell[top], label[top], candidate_scores[top]
    boxes = placement.to_original(boxes_xyxy[cell])
    # Boxes entirely in the letterbox border collapse to nothing once clipped.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, label, candidate_scores = boxes[valid], label[valid], candidate_scores[valid]
    keep = batched_nms(boxes, candidate_scores, label, params.iou_threshold)[: params.max_detections]
    return Detections(
        boxes_xyxy=boxes[keep].float().cpu(),
        scores=candidate_scores[keep].float().cpu(),
        labels=label[keep].cpu(),
    )


def postprocess(
    output: GridOutput, placements: Sequence[Letterbox], params: Sequence[DetectParams]
) -> list[Detections]:
    """A batch: each image with its own letterbox placement and its own parameters."""
    scores = class_scores(output)
    return [
        postprocess_image(output.boxes_xyxy[b], scores[b], placements[b], params[b])
        for b in range(scores.shape[0])
    ]

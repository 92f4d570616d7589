"""Post-processing: raw grid -> scored, thresholded, NMS-filtered boxes in original pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from model.boxes import GridOutput
from model.calibration import Calibration
from model.config import PRE_NMS_TOP_K, DetectParams
from model.grid import GridLayout
from model.letterbox import Letterbox


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


def merge_flips(
    boxes_xyxy: Tensor, scores: Tensor, mirrored: int, layout: GridLayout
) -> tuple[Tensor, Tensor]:
    """Flip test-time augmentation: the last ``mirrored`` images of the batch are mirror images of
    the images before them that asked for it (in order); each such image's cells get the mean of
    their own boxes and scores and their mirror cell's (cell ``j, i`` and ``j, W - 1 - i`` of the
    same level, boxes mirrored back, ``x -> S - x``, on the square ``S`` input). Returns the mirror
    cells' boxes and scores, aligned with their images' cells."""
    own = boxes_xyxy.shape[0] - mirrored
    order = torch.from_numpy(layout.mirror_order()).to(boxes_xyxy.device)
    size = layout.input_size
    back = boxes_xyxy[own:, order][..., [2, 1, 0, 3]] * boxes_xyxy.new_tensor([-1, 1, -1, 1])
    back = back + boxes_xyxy.new_tensor([size, 0, size, 0])
    return back, scores[own:, order]


def postprocess(
    output: GridOutput,
    placements: Sequence[Letterbox],
    params: Sequence[DetectParams],
    calibration: Calibration | None = None,
) -> list[Detections]:
    """A batch: each image with its own letterbox placement and its own parameters; the mirror
    images that ``params[b].flip`` asked for after them (:func:`merge_flips`); scores calibrated
    (:mod:`model.calibration`) before the threshold when there is a calibration."""
    boxes, scores = output.boxes_xyxy, class_scores(output)
    flipped = [b for b, p in enumerate(params) if p.flip]
    if flipped:
        back_boxes, back_scores = merge_flips(boxes, scores, len(flipped), output.layout)
        boxes, scores = boxes[: len(params)].clone(), scores[: len(params)].clone()
        boxes[flipped] = (boxes[flipped] + back_boxes) / 2
        scores[flipped] = (scores[flipped] + back_scores) / 2
    if calibration is not None:
        scores = calibration.apply_tensor(scores)
    return [postprocess_image(boxes[b], scores[b], placements[b], params[b]) for b in range(len(params))]

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
    if scores.device.type == "cuda":  # one wait for the device per batch, not several per image
        return postprocess_batch(boxes[: len(params)], scores[: len(params)], placements, params)
    # On a CPU nothing waits, and image by image measured faster (a 16-image batch of 2,000
    # candidates each: 25 against 39 ms; torchvision's NMS loops over the classes past 4,000 boxes).
    return [postprocess_image(boxes[b], scores[b], placements[b], params[b]) for b in range(len(params))]


def _rank_within(groups: Tensor) -> Tensor:
    """For candidates already ordered within each group, their place in it (0, 1, ...); the
    candidates of one group need not be next to each other."""
    order = torch.sort(groups, stable=True).indices
    sorted_groups = groups[order]
    counts = torch.bincount(sorted_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=groups.device) - starts[sorted_groups]
    return rank


def postprocess_batch(
    boxes_xyxy: Tensor, scores: Tensor, placements: Sequence[Letterbox], params: Sequence[DetectParams]
) -> list[Detections]:
    """:func:`postprocess_image` for a whole batch at once, with the same answers: one threshold
    pass, one top-k per image by a grouped rank, one class-and-image-aware NMS per IoU threshold in
    the batch (usually one), one copy to the host. On a GPU the per-image version waited for the
    device several times per image; this waits once per batch."""
    batch, _, classes = scores.shape
    device = scores.device
    threshold = scores.new_tensor([p.score_threshold for p in params]).view(batch, 1, 1)
    allowed = torch.ones(batch, 1, classes, dtype=torch.bool, device=device)
    for b, p in enumerate(params):
        if p.class_ids is not None:
            allowed[b] = False
            allowed[b, 0, list(p.class_ids)] = True
    image, cell, label = torch.nonzero((scores >= threshold) & allowed, as_tuple=True)
    candidate = scores[image, cell, label]
    if len(candidate) > PRE_NMS_TOP_K:  # the top PRE_NMS_TOP_K of each image
        by_score = torch.sort(candidate, descending=True, stable=True).indices
        image, cell, label, candidate = image[by_score], cell[by_score], label[by_score], candidate[by_score]
        top = _rank_within(image) < PRE_NMS_TOP_K
        image, cell, label, candidate = image[top], cell[top], label[top], candidate[top]
    geometry = scores.new_tensor(
        [[p.pad_x, p.pad_y, p.scale_x, p.scale_y, p.width, p.height] for p in placements]
    )[image]
    pad, scale, limits = geometry[:, [0, 1, 0, 1]], geometry[:, [2, 3, 2, 3]], geometry[:, [4, 5, 4, 5]]
    boxes = ((boxes_xyxy[image, cell] - pad) / scale).clamp(min=0).minimum(limits)
    # Boxes entirely in the letterbox border collapse to nothing once clipped.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, image, label, candidate = boxes[valid], image[valid], label[valid], candidate[valid]
    kept_parts = []
    for iou in sorted({p.iou_threshold for p in params}):
        members = [b for b, p in enumerate(params) if p.iou_threshold == iou]
        chosen = torch.isin(image, torch.tensor(members, device=device)) if len(members) < batch else None
        index = chosen.nonzero().flatten() if chosen is not None else torch.arange(len(image), device=device)
        kept_parts.append(
            index[batched_nms(boxes[index], candidate[index], image[index] * classes + label[index], iou)]
        )
    kept = torch.cat(kept_parts) if kept_parts else torch.zeros(0, dtype=torch.long, device=device)
    kept = kept[torch.sort(candidate[kept], descending=True, stable=True).indices]  # by score, as NMS gives
    limit = torch.tensor([p.max_detections for p in params], device=device)
    kept = kept[_rank_within(image[kept]) < limit[image[kept]]]
    kept = kept[torch.sort(image[kept], stable=True).indices]  # image by image, each by score
    found_boxes, found_scores = boxes[kept].float().cpu(), candidate[kept].float().cpu()
    found_labels, found_images = label[kept].cpu(), image[kept].cpu()
    counts = torch.bincount(found_images, minlength=batch).tolist()
    return [
        Detections(boxes_xyxy=b, scores=s, labels=lab)
        for b, s, lab in zip(
            found_boxes.split(counts), found_scores.split(counts), found_labels.split(counts), strict=True
        )
    ]

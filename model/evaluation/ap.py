"""VOC detection metrics: per-class average precision at an IoU threshold (mAP@0.5).

Matching follows the VOC devkit: detections of a class are taken by descending score; each is
matched to the ground-truth box it overlaps most; strictly above the IoU threshold it is a true positive
if that box is not yet taken, a false positive if it is (a duplicate), and ignored if that box
is ``difficult``. Difficult boxes do not count towards the number of positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from model.postprocess import Detections


@dataclass(frozen=True)
class ImageGroundTruth:
    """boxes_xyxy ``(M, 4)``, labels ``(M,)``, difficult ``(M,)`` bool; original pixels."""

    boxes_xyxy: Tensor
    labels: Tensor
    difficult: Tensor


def average_precision(recall: Tensor, precision: Tensor, use_07_metric: bool = False) -> float:
    """Area under the precision/recall curve: all-point interpolation, or VOC07 11-point."""
    if use_07_metric:
        ap = 0.0
        for t in torch.linspace(0, 1, 11).tolist():
            above = precision[recall >= t - 1e-9]
            ap += (float(above.max()) if above.numel() else 0.0) / 11.0
        return ap
    mrec = torch.cat([torch.tensor([0.0]), recall.double(), torch.tensor([1.0])])
    mpre = torch.cat([torch.tensor([0.0]), precision.double(), torch.tensor([0.0])])
    # Precision envelope: at each recall, the best precision at that recall or beyond.
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])
    changes = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]).sum())


@dataclass(frozen=True)
class PrecisionRecall:
    """One class's detections ranked by score, with the running recall and precision after each."""

    scores: Tensor  # (D,) descending, ignored detections left out
    recall: Tensor
    precision: Tensor
    positives: int  # ground-truth boxes that count


def class_precision_recall(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    class_id: int,
    iou_threshold: float = 0.5,
    area_range: tuple[float, float] | None = None,
) -> PrecisionRecall:
    """The precision/recall curve of one class over a set of images, matched as in the VOC devkit.

    ``area_range`` (in original pixels², lower bound included) restricts it to objects of that
    size, COCO style: other ground-truth boxes are ignored like difficult ones, and so are
    unmatched detections outside the range.
    """
    scores, tp, positives = class_matches(detections, ground_truth, class_id, iou_threshold, area_range)
    tp_cum = torch.tensor(tp).cumsum(0)
    fp_cum = (1 - torch.tensor(tp)).cumsum(0)
    recall = tp_cum / max(positives, 1)
    precision = tp_cum / (tp_cum + fp_cum).clamp(min=1)
    return PrecisionRecall(torch.tensor(scores), recall, precision, positives)


def class_matches(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    class_id: int,
    iou_threshold: float = 0.5,
    area_range: tuple[float, float] | None = None,
) -> tuple[list[float], list[float], int]:
    """One class's detections by descending score, matched as in the VOC devkit: their scores,
    1.0 for each that found an object (0.0 otherwise; ignored ones left out), and how many
    ground-truth boxes count."""
    records: list[tuple[float, int, int]] = []  # (score, image index, detection index)
    gt_boxes: list[Tensor] = []
    gt_ignored: list[Tensor] = []
    det_boxes: list[Tensor] = []
    positives = 0
    for k, (det, gt) in enumerate(zip(detections, ground_truth, strict=True)):
        mask = gt.labels == class_id
        boxes = gt.boxes_xyxy[mask].float()
        ignored = gt.difficult[mask].clone()
        if area_range is not None:
            ignored |= ~_in_range(boxes, area_range)
        gt_boxes.append(boxes)
        gt_ignored.append(ignored)
        positives += int((~ignored).sum())
        dmask = det.labels == class_id
        det_boxes.append(det.boxes_xyxy[dmask].float())
        records.extend((float(s), k, n) for n, s in enumerate(det.scores[dmask].tolist()))
    records.sort(key=lambda r: -r[0])
    taken = [torch.zeros(len(b), dtype=torch.bool) for b in gt_boxes]
    ious = [
        box_iou(d, g) if len(d) and len(g) else torch.zeros(len(d), len(g))
        for d, g in zip(det_boxes, gt_boxes, strict=True)
    ]
    scores: list[float] = []
    tp: list[float] = []
    for score, image, n in records:
        overlaps = ious[image][n] if ious[image].shape[1] else torch.zeros(0)
        if overlaps.numel() and float(overlaps.max()) > iou_threshold:
            best = int(overlaps.argmax())
            if bool(gt_ignored[image][best]):
                continue
            hit = not taken[image][best]
            taken[image][best] = True
        else:
            if area_range is not None and not bool(_in_range(det_boxes[image][n : n + 1], area_range)[0]):
                continue
            hit = False
        scores.append(score)
        tp.append(1.0 if hit else 0.0)
    return scores, tp, positives


def _in_range(boxes: Tensor, area_range: tuple[float, float]) -> Tensor:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (area >= area_range[0]) & (area < area_range[1])


def class_average_precision(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    class_id: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    area_range: tuple[float, float] | None = None,
) -> float | None:
    """AP of one class over a set of images; ``None`` when the class has no box that counts."""
    curve = class_precision_recall(detections, ground_truth, class_id, iou_threshold, area_range)
    if curve.positives == 0:
        return None
    if not len(curve.scores):
        return 0.0
    return average_precision(curve.recall, curve.precision, use_07_metric)


@dataclass(frozen=True)
class EvaluationResult:
    map50: float
    ap: dict[str, float | None]  # None: the class has no (non-difficult) ground truth here


def evaluate_detections(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> EvaluationResult:
    """Per-class AP and their mean over the classes that have ground truth."""
    ap = {
        name: class_average_precision(detections, ground_truth, k, iou_threshold, use_07_metric)
        for k, name in enumerate(classes)
    }
    present = [v for v in ap.values() if v is not None]
    return EvaluationResult(map50=sum(present) / len(present) if present else 0.0, ap=ap)

"""Scoring a predictor on a dataset: the AP report, the card's ``val`` block and the printed table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.config import DetectParams
from model.data import DetectionDataset, collate_raw
from model.evaluation.ap import EvaluationResult, ImageGroundTruth, evaluate_detections
from model.postprocess import Detections
from model.predictor import Predictor, TensorView

# Evaluation keeps low-scoring boxes: AP integrates over the whole precision/recall curve.
EVAL_PARAMS = DetectParams(score_threshold=0.01, iou_threshold=0.45, max_detections=100)


@dataclass(frozen=True)
class EvaluationReport:
    result: EvaluationResult
    images: int
    seconds: float
    detections: list[Detections] = field(default_factory=list, repr=False)
    truths: list[ImageGroundTruth] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "map50": round(self.result.map50, 6),
            "ap": {k: (None if v is None else round(v, 6)) for k, v in self.result.ap.items()},
            "images": self.images,
            "seconds": round(self.seconds, 3),
        }


def evaluate_predictor(
    predictor: Predictor | TensorView,
    dataset: DetectionDataset,
    batch_size: int = 16,
    workers: int = 2,
    params: DetectParams = EVAL_PARAMS,
    use_07_metric: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> EvaluationReport:
    """Run the serving prediction path over ``dataset`` and score it with VOC AP@0.5."""
    start = time.perf_counter()
    subset: torch.utils.data.Dataset = dataset
    if limit is not None:
        subset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_raw)
    detections: list[Detections] = []
    truths: list[ImageGroundTruth] = []
    for images, truth_batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        for found, annotation in zip(predictor(images, params), truth_batch, strict=True):
            detections.append(found)
            truths.append(ImageGroundTruth(annotation.boxes_xyxy, annotation.labels, annotation.difficult))
    result = evaluate_detections(detections, truths, predictor.config.classes, 0.5, use_07_metric)
    return EvaluationReport(result, len(detections), time.perf_counter() - start, detections, truths)


def card_val_block(
    report: EvaluationReport, split: str, predictor: Predictor | TensorView
) -> dict[str, object]:
    """The ``val`` block of a model card: what was measured, on what, how."""
    return {
        "split": split,
        "images": report.images,
        "map50": round(report.result.map50, 6),
        "ap50_per_class": {k: None if v is None else round(v, 6) for k, v in report.result.ap.items()},
        "evaluated_on": f"{predictor.device} {predictor.precision} ({predictor.backend}"
        + (", numpy runtime)" if predictor.runtime == "numpy" else ")"),
        "metric": "VOC all-point AP at IoU 0.5, difficult ignored",
    }


def format_table(result: EvaluationResult) -> str:
    lines = [f"{'class':<14} {'AP@0.5':>7}", "-" * 22]
    for name, ap in result.ap.items():
        lines.append(f"{name:<14} {'n/a' if ap is None else f'{ap:.4f}':>7}")
    lines += ["-" * 22, f"{'mAP@0.5':<14} {result.map50:>7.4f}"]
    return "\n".join(lines)

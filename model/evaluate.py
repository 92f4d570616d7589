"""Evaluate a weights folder on a VOC split: ``python -m model.evaluate --weights weights --data VOCDEVKIT``.

Prints a per-class AP table and, as its last line, one JSON object
``{"map50": ..., "ap": {class: ...}, "images": N, "seconds": ...}``. ``--plots DIR`` also writes
the error analysis of :mod:`model.analysis` (PR curves, confusion matrix with background, AP by
object size, F1-best thresholds; CSV, JSON and PNG). ``--write-card`` records the result as the
``val`` block of the weights folder's card (the weights and their hash unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import write_card
from model.config import DetectParams
from model.data import VOCDetection, collate_raw
from model.metrics import EvaluationResult, ImageGroundTruth, evaluate_detections
from model.postprocess import Detections
from model.predictor import BACKENDS, Predictor

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
    predictor: Predictor,
    dataset: VOCDetection,
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


def card_val_block(report: EvaluationReport, split: str, predictor: Predictor) -> dict[str, object]:
    """The ``val`` block of a model card: what was measured, on what, how."""
    return {
        "split": split,
        "images": report.images,
        "map50": round(report.result.map50, 6),
        "ap50_per_class": {k: None if v is None else round(v, 6) for k, v in report.result.ap.items()},
        "evaluated_on": f"{predictor.device} {predictor.precision} ({predictor.backend})",
        "metric": "VOC all-point AP at IoU 0.5, difficult ignored",
    }


def format_table(result: EvaluationResult) -> str:
    lines = [f"{'class':<14} {'AP@0.5':>7}", "-" * 22]
    for name, ap in result.ap.items():
        lines.append(f"{name:<14} {'n/a' if ap is None else f'{ap:.4f}':>7}")
    lines += ["-" * 22, f"{'mAP@0.5':<14} {result.map50:>7.4f}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__)
    parser.add_argument(
        "--weights", default="weights", help="weights folder (model.safetensors + model.json)"
    )
    parser.add_argument("--data", action="append", required=True, help="VOCdevkit folder; repeat for several")
    parser.add_argument("--split", default="val")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=EVAL_PARAMS.score_threshold)
    parser.add_argument("--use-07-metric", action="store_true", help="VOC07 11-point AP instead of all-point")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument(
        "--plots", type=Path, default=None, help="write the error analysis (CSV, JSON, PNG) here"
    )
    parser.add_argument("--write-card", action="store_true", help="record the result in the weights' card")
    args = parser.parse_args(argv)

    predictor, loaded = Predictor.from_weights(args.weights, device=args.device, backend=args.backend)
    dataset = VOCDetection(args.data, args.split, classes=loaded.config.classes)
    params = DetectParams(args.score_threshold, EVAL_PARAMS.iou_threshold, EVAL_PARAMS.max_detections)
    report = evaluate_predictor(
        predictor,
        dataset,
        args.batch_size,
        args.workers,
        params,
        args.use_07_metric,
        progress=sys.stderr.isatty(),
        limit=args.limit,
    )
    print(
        f"weights {args.weights} (version {loaded.version}), split {args.split}, "
        f"{report.images} images, {report.seconds:.1f} s on {predictor.device}"
    )
    print(format_table(report.result))
    if args.plots is not None:
        from model.analysis import analyse, write_analysis

        analysis = analyse(report.detections, report.truths, loaded.config.classes)
        written = write_analysis(analysis, report.result.ap, args.plots)
        sizes = ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in analysis.map_by_size.items()
        )
        print(f"mAP@0.5 by object size: {sizes}; analysis in {args.plots} ({len(written)} files)")
    if args.write_card:
        if args.limit is not None:
            parser.error("--write-card needs the whole split (no --limit)")
        # "val" is the fp32 figure; every backend's own figure is kept under "val_by_backend", so
        # the card says what each way of serving the weights scores.
        card = dict(loaded.card.get("card", {}))
        block = card_val_block(report, args.split, predictor)
        if predictor.precision == "fp32" or "val" not in card:
            card["val"] = block
        by_backend = dict(card.get("val_by_backend", {}))
        by_backend[predictor.backend] = {k: block[k] for k in ("split", "images", "map50", "evaluated_on")}
        card["val_by_backend"] = by_backend
        write_card(args.weights, card)
        print(f"card of {args.weights} updated with {args.split} AP")
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

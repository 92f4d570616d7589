"""Evaluate a weights folder on a dataset split: ``python -m model.evaluate --weights W --data DATASET``.

Prints a per-class AP table and, as its last line, one JSON object
``{"map50": ..., "ap": {class: ...}, "images": N, "seconds": ...}``. ``--plots DIR`` also writes
the error analysis of :mod:`model.evaluation.analysis` (PR curves, confusion matrix with background, AP by
object size, F1-best thresholds; CSV, JSON and PNG). ``--write-card`` records the result as the
``val`` block of the weights folder's card (the weights and their hash unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model.arrays.predictor import ArrayPredictor
from model.backends import BACKENDS
from model.card import WeightsCard
from model.checkpoint import LoadedWeights, write_card
from model.config import DetectParams
from model.data import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, open_dataset, split_canary
from model.evaluation.report import EVAL_PARAMS, card_val_block, evaluate_predictor, format_table
from model.predictor import Predictor, TensorView


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__)
    parser.add_argument(
        "--weights", default="weights", help="weights folder (model.safetensors + model.json)"
    )
    parser.add_argument(
        "--data", action="append", required=True, help="dataset (any format model.train reads); repeat"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--split-fraction", type=float, default=DEFAULT_VAL_FRACTION, help="val share, data without splits"
    )
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument(
        "--runtime",
        default="torch",
        choices=("torch", "numpy"),
        help="numpy: the torch-free serving path of the CPU image (model.arrays), int8 or null",
    )
    parser.add_argument(
        "--raw-scores", action="store_true", help="the network's scores, not the card's calibration of them"
    )
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--input-size", type=int, default=None, help="instead of the card's (multiple of 32)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=EVAL_PARAMS.score_threshold)
    parser.add_argument("--use-07-metric", action="store_true", help="VOC07 11-point AP instead of all-point")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument(
        "--canary",
        type=int,
        default=0,
        help="only the split's canary of N images (a model trained on the rest)",
    )
    parser.add_argument(
        "--plots", type=Path, default=None, help="write the error analysis (CSV, JSON, PNG) here"
    )
    parser.add_argument("--write-card", action="store_true", help="record the result in the weights' card")
    args = parser.parse_args(argv)

    predictor: Predictor | TensorView
    loaded: WeightsCard | LoadedWeights
    if args.runtime == "numpy":
        array_predictor, loaded = ArrayPredictor.from_weights(
            args.weights, backend=args.backend, calibrated=not args.raw_scores, input_size=args.input_size
        )
        predictor = TensorView(array_predictor)
    else:
        predictor, loaded = Predictor.from_weights(
            args.weights,
            device=args.device,
            backend=args.backend,
            calibrated=not args.raw_scores,
            input_size=args.input_size,
        )
    dataset = open_dataset(args.data, args.split, loaded.config.classes, args.split_fraction, args.split_seed)
    if args.canary:
        dataset = split_canary(dataset, args.canary)[1]
    print(f"data: {dataset.description}")
    params = DetectParams(
        args.score_threshold, EVAL_PARAMS.iou_threshold, EVAL_PARAMS.max_detections, flip=args.flip
    )
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
        from model.evaluation.analysis import analyse, write_analysis

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
        key = predictor.backend if args.runtime == "torch" else f"{predictor.backend} (numpy runtime)"
        by_backend[key] = {k: block[k] for k in ("split", "images", "map50", "evaluated_on")}
        card["val_by_backend"] = by_backend
        write_card(args.weights, card)
        print(f"card of {args.weights} updated with {args.split} AP")
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

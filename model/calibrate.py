"""Fit a score calibration: ``python -m model.calibrate --weights W --data DATASET [--split val]``.

Runs the serving prediction path (raw scores) over the split, fits a per-class monotone map from
score to the share of right detections on the images at even positions
(:mod:`model.evaluation.calibration_fit`), and measures on the images at odd positions the
expected calibration error before and after, with a reliability table. ``--write-card`` stores
the map in the weights folder's ``model.json`` (top-level ``calibration``; the weights and their
hash unchanged): both runtimes then serve calibrated scores (``DETECTOR_CALIBRATED_SCORES``).
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from model.backends import BACKENDS
from model.calibration import CARD_KEY, GRID, MIN_DETECTIONS
from model.checkpoint import record_derived
from model.data import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, open_dataset, split_canary
from model.evaluation.ap import evaluate_detections
from model.evaluation.calibration_fit import calibrated_detections, fit, halves, reliability
from model.evaluation.report import EVAL_PARAMS, evaluate_predictor
from model.predictor import Predictor

METHODS = {"isotonic": "isotonic (pool adjacent violators)", "platt": "Platt scaling (logistic on the logit)"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.calibrate", description=__doc__)
    parser.add_argument("--weights", default="weights")
    parser.add_argument(
        "--data", action="append", required=True, help="dataset (any format model.train reads)"
    )
    parser.add_argument("--split", default="val", help="held-out images: never the ones the model trained on")
    parser.add_argument("--split-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="fit on what serves")
    parser.add_argument("--method", default="isotonic", choices=("isotonic", "platt"))
    parser.add_argument(
        "--min-detections", type=int, default=MIN_DETECTIONS, help="a class's own map from this many on"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--canary", type=int, default=0, help="only the split's canary (a model that trained on the rest)"
    )
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)

    predictor, loaded = Predictor.from_weights(
        args.weights, args.device, backend=args.backend, calibrated=False
    )
    classes = loaded.config.classes
    dataset = open_dataset(args.data, args.split, classes, args.split_fraction, args.split_seed)
    if args.canary:
        dataset = split_canary(dataset, args.canary)[1]
    report = evaluate_predictor(
        predictor,
        dataset,
        workers=args.workers,
        params=EVAL_PARAMS,
        progress=sys.stderr.isatty(),
        limit=args.limit,
    )
    fitting, checking = halves(report.images)
    fitted = fit(
        [report.detections[k] for k in fitting],
        [report.truths[k] for k in fitting],
        classes,
        args.method,
        args.min_detections,
    )
    calibration = fitted.calibration(classes)
    check_dets = [report.detections[k] for k in checking]
    check_truths = [report.truths[k] for k in checking]
    before = reliability(check_dets, check_truths, classes, None)
    after = reliability(check_dets, check_truths, classes, calibration)
    mapped = calibrated_detections(report.detections, calibration, len(classes))
    map_after = evaluate_detections(mapped, report.truths, classes).map50
    summary = {
        "split": args.split,
        "fitted_on": f"{len(fitting)} images (even positions of the split's list)",
        "checked_on": f"{len(checking)} images (odd positions)",
        "backend": predictor.backend,
        "map50_raw": round(report.result.map50, 6),
        "map50_calibrated": round(map_after, 6),
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "classwise_ece_before": before["classwise_ece"],
        "classwise_ece_after": after["classwise_ece"],
        "pooled_classes": sorted(name for name, p in fitted.pooled.items() if p),
    }
    head = f"{'n':>7} {'score':>6} {'right':>6}"
    print(f"{'score bin':<10} raw {head}   calibrated {head}")
    for raw_bin, cal_bin in zip(before["bins"], after["bins"], strict=True):  # type: ignore[call-overload]
        cells = []
        for row in (raw_bin, cal_bin):
            mean = "" if row["mean_score"] is None else f"{row['mean_score']:.3f}"
            rate = "" if row["hit_rate"] is None else f"{row['hit_rate']:.3f}"
            cells.append(f"{row['detections']:>7} {mean:>6} {rate:>6}")
        print(f"{raw_bin['bin']:<10}     {cells[0]}              {cells[1]}")
    if args.write_card:
        if args.limit is not None:
            parser.error("--write-card needs the whole split (no --limit)")
        block = {
            "method": f"{METHODS[args.method]} per class, applied through {GRID}-step tables",
            **summary,
            "reliability_before": before,
            "reliability_after": after,
            "classes": fitted.card_block(),
        }
        record_derived(args.weights, CARD_KEY, block)
        print(f"calibration written to {args.weights}/model.json", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far the reduced-precision backends move single scores from fp32, on real images.

    .venv/bin/python tests/benchmarks/bench_score_shift.py --data VOCDEVKIT --split val

Every fp32 (ONNX Runtime) detection scoring at least ``--floor`` is matched to the reduced-precision
backend's detection of the same class with the highest IoU (at least 0.5); the table gives the
absolute score shift of the matched ones by percentile, the share over 0.05, and the share left
without a twin. val mAP (what ``auto`` is held to) is ``model.evaluate``'s and docs/model.md's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.config import DetectParams
from model.data import open_dataset
from model.postprocess import Detections
from model.predictor import Predictor

LOW = DetectParams(score_threshold=0.01, iou_threshold=0.45, max_detections=100)


def detect_all(predictor: Predictor, images: list[torch.Tensor]) -> list[Detections]:
    return [
        found for start in range(0, len(images), 16) for found in predictor(images[start : start + 16], LOW)
    ]


def shifts(reference: list[Detections], other: list[Detections], floor: float) -> tuple[list[float], int]:
    """Absolute score shifts of the reference detections over ``floor`` that have a twin, and how
    many have none."""
    moved: list[float] = []
    orphans = 0
    for want, got in zip(reference, other, strict=True):
        for k in range(len(want.scores)):
            if want.scores[k] < floor:
                continue
            same = got.labels == want.labels[k]
            iou = box_iou(want.boxes_xyxy[k : k + 1], got.boxes_xyxy)[0] * same
            if len(iou) == 0 or iou.max() < 0.5:
                orphans += 1
                continue
            moved.append(abs(float(got.scores[int(iou.argmax())] - want.scores[k])))
    return moved, orphans


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[2] / "weights")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--floor", type=float, nargs="+", default=[0.03, 0.25])
    args = parser.parse_args()
    reference, loaded = Predictor.from_weights(args.weights, "cpu", backend="onnxruntime", calibrated=False)
    dataset = open_dataset([args.data], args.split, loaded.config.classes)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    images = [dataset[k][0] for k in range(count)]
    fp32 = detect_all(reference, images)  # once: every backend and floor is compared with it
    print(f"{count} images of {args.split}; reference: onnxruntime fp32")
    print(
        f"{'backend':<14} {'floor':>5} {'matched':>8} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} "
        f"{'>0.05':>7} {'no twin':>8}"
    )
    for backend in ("openvino-bf16", "openvino-int8"):
        other, _ = Predictor.from_weights(args.weights, "cpu", backend=backend, calibrated=False)  # type: ignore[arg-type]
        found = detect_all(other, images)
        for floor in args.floor:
            moved, orphans = shifts(fp32, found, floor)
            q = torch.tensor(moved).quantile(torch.tensor([0.5, 0.95, 0.99])).tolist() if moved else [0, 0, 0]
            over = sum(m > 0.05 for m in moved) / max(1, len(moved))
            total = len(moved) + orphans
            print(
                f"{backend:<14} {floor:>5.2f} {len(moved):>8} {q[0]:>6.3f} {q[1]:>6.3f} {q[2]:>6.3f} "
                f"{max(moved, default=0):>6.3f} {over:>7.1%} {orphans / max(1, total):>8.1%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

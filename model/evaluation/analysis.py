"""Evaluation that explains errors: PR curves, a confusion matrix, AP by object size, F1 thresholds.

Written by ``python -m model.evaluate ... --plots DIR``: ``analysis.json`` and CSV files with
every figure, and PNG plots a person can read (``pr_curves.png``, ``confusion.png``,
``ap_by_size.png``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.ops import box_iou

from model.evaluation.ap import ImageGroundTruth, class_average_precision, class_precision_recall
from model.postprocess import Detections

# COCO's size buckets, in original-image pixels² of the box.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, float("inf")),
}


@dataclass(frozen=True)
class ClassCurve:
    recall: list[float]
    precision: list[float]
    best_f1: float
    best_f1_threshold: float | None  # the score threshold that maximises F1
    positives: int


@dataclass(frozen=True)
class Analysis:
    classes: tuple[str, ...]
    curves: dict[str, ClassCurve]
    ap_by_size: dict[str, dict[str, float | None]]  # size -> class -> AP
    map_by_size: dict[str, float | None]
    confusion: list[list[int]]  # (C + 1) x (C + 1): rows truth, columns prediction; last = background
    confusion_threshold: float


def f1_threshold(scores: Tensor, recall: Tensor, precision: Tensor) -> tuple[float, float | None]:
    """The best F1 along a ranked list and the score threshold that reaches it."""
    if not len(scores):
        return 0.0, None
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best = int(f1.argmax())
    return float(f1[best]), float(scores[best])


def confusion_matrix(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    num_classes: int,
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> list[list[int]]:
    """Detections over ``score_threshold`` matched one-to-one to ground truth by IoU, whatever the class.

    A matched pair counts at (true class, predicted class); an unmatched object at (class,
    background): missed; an unmatched detection at (background, class): a false alarm. Difficult
    objects and the detections they take are left out, as in the AP.
    """
    background = num_classes
    matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.long)
    for det, gt in zip(detections, ground_truth, strict=True):
        keep = det.scores >= score_threshold
        boxes, labels = det.boxes_xyxy[keep].float(), det.labels[keep]
        ious = box_iou(gt.boxes_xyxy.float(), boxes) if len(boxes) and len(gt.labels) else None
        gt_used = torch.zeros(len(gt.labels), dtype=torch.bool)
        det_used = torch.zeros(len(labels), dtype=torch.bool)
        if ious is not None:
            # Greedy by IoU, highest first.
            order = torch.argsort(ious.flatten(), descending=True)
            for flat in order.tolist():
                g, d = divmod(flat, len(labels))
                if float(ious[g, d]) <= iou_threshold:
                    break
                if gt_used[g] or det_used[d]:
                    continue
                gt_used[g] = det_used[d] = True
                if not bool(gt.difficult[g]):
                    matrix[int(gt.labels[g]), int(labels[d])] += 1
        for g in range(len(gt.labels)):
            if not gt_used[g] and not bool(gt.difficult[g]):
                matrix[int(gt.labels[g]), background] += 1
        for d in range(len(labels)):
            if not det_used[d]:
                matrix[background, int(labels[d])] += 1
    return matrix.tolist()


def analyse(
    detections: Sequence[Detections],
    ground_truth: Sequence[ImageGroundTruth],
    classes: Sequence[str],
    confusion_threshold: float = 0.25,
) -> Analysis:
    curves: dict[str, ClassCurve] = {}
    for k, name in enumerate(classes):
        curve = class_precision_recall(detections, ground_truth, k)
        best, threshold = f1_threshold(curve.scores, curve.recall, curve.precision)
        curves[name] = ClassCurve(
            curve.recall.tolist(), curve.precision.tolist(), best, threshold, curve.positives
        )
    ap_by_size: dict[str, dict[str, float | None]] = {}
    map_by_size: dict[str, float | None] = {}
    for size, area in SIZES.items():
        ap_by_size[size] = {
            name: class_average_precision(detections, ground_truth, k, area_range=area)
            for k, name in enumerate(classes)
        }
        present = [v for v in ap_by_size[size].values() if v is not None]
        map_by_size[size] = sum(present) / len(present) if present else None
    confusion = confusion_matrix(detections, ground_truth, len(classes), confusion_threshold)
    return Analysis(tuple(classes), curves, ap_by_size, map_by_size, confusion, confusion_threshold)


def write_analysis(analysis: Analysis, ap: dict[str, float | None], out: str | Path) -> list[Path]:
    """Write ``analysis.json``, ``per_class.csv``, ``confusion.csv`` and the three PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = analysis.classes
    per_class = [
        {
            "class": name,
            "ap50": ap.get(name),
            **{f"ap50_{size}": analysis.ap_by_size[size][name] for size in SIZES},
            "objects": analysis.curves[name].positives,
            "best_f1": round(analysis.curves[name].best_f1, 4),
            "best_f1_threshold": analysis.curves[name].best_f1_threshold,
        }
        for name in classes
    ]
    with (out / "per_class.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(per_class[0]))
        writer.writeheader()
        writer.writerows(per_class)
    labels = [*classes, "background"]
    with (out / "confusion.csv").open("w", newline="") as handle:
        writer_rows = csv.writer(handle)
        writer_rows.writerow(["truth \\ predicted", *labels])
        for name, row in zip(labels, analysis.confusion, strict=True):
            writer_rows.writerow([name, *row])
    (out / "analysis.json").write_text(
        json.dumps(
            {
                "per_class": per_class,
                "map50_by_size": analysis.map_by_size,
                "size_buckets_px2": {
                    k: [v[0], None if v[1] == float("inf") else v[1]] for k, v in SIZES.items()
                },
                "confusion": {
                    "labels": labels,
                    "matrix": analysis.confusion,
                    "score_threshold": analysis.confusion_threshold,
                },
            },
            indent=2,
        )
    )
    return [out / "per_class.csv", out / "confusion.csv", out / "analysis.json", *_plots(analysis, ap, out)]


def _plots(analysis: Analysis, ap: dict[str, float | None], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = analysis.classes
    columns = 5
    rows = -(-len(classes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, classes, strict=False):
        curve = analysis.curves[name]
        ax.plot(curve.recall, curve.precision, linewidth=1.2)
        value = ap.get(name)
        ax.set_title(f"{name}  AP {value:.2f}" if value is not None else name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.tight_layout()
    pr_path = out / "pr_curves.png"
    fig.savefig(pr_path, dpi=80)
    plt.close(fig)

    labels = [*classes, "background"]
    matrix = torch.tensor(analysis.confusion, dtype=torch.float64)
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(
        f"confusion at score >= {analysis.confusion_threshold} (row shares; last row: false alarms by class)",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    confusion_path = out / "confusion.png"
    fig.savefig(confusion_path, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.27
    for offset, size in enumerate(SIZES):
        values = [analysis.ap_by_size[size][name] or 0.0 for name in classes]
        positions = [k + (offset - 1) * width for k in range(len(classes))]
        mean = analysis.map_by_size[size]
        ax.bar(positions, values, width, label=f"{size} (mAP {mean:.2f})" if mean is not None else size)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AP@0.5")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("AP by object size (small < 32², medium < 96², large; original pixels)", fontsize=9)
    fig.tight_layout()
    size_path = out / "ap_by_size.png"
    fig.savefig(size_path, dpi=80)
    plt.close(fig)
    return [pr_path, confusion_path, size_path]

"""Dataset statistics: ``python -m model.stats --data DATASET --split train [--out DIR]``.

``--data`` is any format :mod:`model.data` reads (``--split all`` for every image of a dataset
without splits of its own).

Prints class counts, objects per image, box sizes, aspect ratios and sizes relative to the
image as a table, and writes the same as histograms to ``stats_{split}.png``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from model.data import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, open_dataset


def _summary(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    q = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
    return (
        f"min {min(values):.2f}  p5 {q[0]:.2f}  median {statistics.median(values):.2f}  "
        f"mean {statistics.fmean(values):.2f}  p95 {q[-1]:.2f}  max {max(values):.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.stats", description=__doc__)
    parser.add_argument("--data", action="append", required=True, help="dataset; repeat for several")
    parser.add_argument("--split", default="train")
    parser.add_argument("--classes", default=None, help="class names in id order (default: the data's)")
    parser.add_argument("--split-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    parser.add_argument("--out", default=".", help="folder for the PNG")
    args = parser.parse_args(argv)

    classes = args.classes.split(",") if args.classes else None
    dataset = open_dataset(args.data, args.split, classes, args.split_fraction, args.split_seed)
    names = dataset.classes
    print(f"data: {dataset.description}")
    class_counts: Counter[str] = Counter()
    difficult = 0
    per_image: list[float] = []
    widths: list[float] = []
    heights: list[float] = []
    aspect: list[float] = []
    relative: list[float] = []
    for index in range(len(dataset)):
        ann = dataset.annotation(index)
        per_image.append(len(ann.labels))
        difficult += int(ann.difficult.sum())
        for box, label in zip(ann.boxes_xyxy.tolist(), ann.labels.tolist(), strict=True):
            class_counts[names[label]] += 1
            w, h = box[2] - box[0], box[3] - box[1]
            widths.append(w)
            heights.append(h)
            aspect.append(w / h if h > 0 else float("inf"))
            if ann.width and ann.height:
                relative.append(((w * h) / (ann.width * ann.height)) ** 0.5)

    total = sum(class_counts.values())
    print(f"split {args.split}: {len(dataset)} images, {total} objects ({difficult} difficult)")
    print(f"{'class':<14} {'objects':>8} {'share':>7}")
    for name in names:
        count = class_counts.get(name, 0)
        print(f"{name:<14} {count:>8} {count / max(total, 1):>7.1%}")
    print(f"objects/image   {_summary(per_image)}")
    print(f"box width px    {_summary(widths)}")
    print(f"box height px   {_summary(heights)}")
    print(f"aspect w/h      {_summary(aspect)}")
    print(f"sqrt(area) rel. {_summary(relative)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    axes[0, 0].barh(list(names), [class_counts.get(n, 0) for n in names])
    axes[0, 0].set_title("objects per class")
    axes[0, 1].hist(per_image, bins=range(0, int(max(per_image, default=1)) + 2))
    axes[0, 1].set_title("objects per image")
    axes[1, 0].hist([a for a in aspect if a != float("inf")], bins=50, range=(0, 5))
    axes[1, 0].set_title("aspect ratio w/h")
    axes[1, 1].hist(relative, bins=50, range=(0, 1))
    axes[1, 1].set_title("box size: sqrt(box area / image area)")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"stats_{args.split}.png"
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

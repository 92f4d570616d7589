"""Draw detections on image files: ``python -m model.predict IMAGE... --weights weights --out DIR``.

Writes ``DIR/<name>.jpg`` with boxes, class names and scores drawn (the same drawing code the
API uses for ``format=image``) and prints one JSON line per image with its detections.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from torchvision.io import write_jpeg

from model.data import read_image
from model.draw import draw_detections
from model.predictor import Predictor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.predict", description=__doc__)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--weights", default="weights")
    parser.add_argument("--out", type=Path, required=True, help="folder for the drawn images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--score-threshold", type=float, default=None, help="default: the model card's")
    parser.add_argument("--iou-threshold", type=float, default=None)
    parser.add_argument("--max-detections", type=int, default=None)
    args = parser.parse_args(argv)

    predictor, loaded = Predictor.from_weights(args.weights, device=args.device)
    params = loaded.defaults.with_overrides(args.score_threshold, args.iou_threshold, args.max_detections)
    args.out.mkdir(parents=True, exist_ok=True)
    classes = predictor.config.classes
    failures = 0
    for path in args.images:
        try:
            image = read_image(path)
        except (OSError, RuntimeError) as exc:
            print(f"{path}: cannot read it as an image ({exc})", file=sys.stderr)
            failures += 1
            continue
        found = predictor(image, params)[0]
        target = args.out / f"{path.stem}.jpg"
        write_jpeg(draw_detections(image, found, classes), str(target), quality=90)
        detections = [
            {"class_name": classes[int(c)], "score": round(float(s), 4), "box": [round(v, 1) for v in b]}
            for b, s, c in zip(
                found.boxes_xyxy.tolist(), found.scores.tolist(), found.labels.tolist(), strict=True
            )
        ]
        print(json.dumps({"image": str(path), "out": str(target), "detections": detections}))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

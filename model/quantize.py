"""Derive the int8 network served on CPUs with VNNI: ``python -m model.quantize --weights weights
--data DATASET`` (:mod:`model.backends.quantize` says how). NNCF is needed here only (``.[quantize]``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model.backends.openvino import INT8_BIN, INT8_XML
from model.backends.quantize import quantize


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.quantize", description=__doc__)
    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="dataset (any format model.train reads)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=256, help="calibration images")
    args = parser.parse_args(argv)
    block = quantize(args.weights, args.data, args.split, args.images)
    print(f"wrote {args.weights / INT8_XML} and {INT8_BIN}: {block}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

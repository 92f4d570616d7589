"""Re-encode a dataset split for travel, or check a pack (:mod:`model.data.pack` has the format).

    python -m model.pack write --data VOCDEVKIT --split train --out packs/train \
        --long-side 448 --quality 75 --part-mib 30
    python -m model.pack check packs/train
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model.data.pack import PackError, check_pack, write_pack


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.pack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="re-encode a VOC split into a pack")
    write.add_argument("--data", action="append", required=True, help="VOCdevkit folder; repeat for several")
    write.add_argument("--split", default="train")
    write.add_argument("--out", required=True)
    write.add_argument("--long-side", type=int, default=448)
    write.add_argument("--quality", type=int, default=75)
    write.add_argument("--part-mib", type=float, default=30.0)
    write.add_argument("--limit", type=int, default=None, help="only the first N images")
    write.add_argument(
        "--canary",
        type=int,
        default=0,
        help="leave out the split's canary of N images (to train on the rest)",
    )
    check = commands.add_parser("check", help="verify a pack's parts (count and sha256)")
    check.add_argument("folder")
    args = parser.parse_args(argv)
    if args.command == "write":
        index = write_pack(
            args.data,
            args.split,
            args.out,
            args.long_side,
            args.quality,
            args.part_mib,
            limit=args.limit,
            canary=args.canary,
        )
    else:
        try:
            index = check_pack(args.folder)
        except PackError as exc:
            print(f"pack check failed: {exc}", file=sys.stderr)
            return 1
    parts = index["parts"]
    for part in parts:
        mib = part["bytes"] / 2**20
        print(f"{part['file']}  {part['images']:>5} images  {mib:7.2f} MiB  {part['sha256'][:12]}")
    total = sum(p["bytes"] for p in parts) / 2**20
    print(
        f"{index['images']} images in {len(parts)} parts, {total:.2f} MiB, "
        f"long side {index['long_side']}, quality {index['quality']}: ok"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the numpy runtime (the CPU image's, no torch) against the torch runtime, side by side.

    python tests/benchmarks/bench_runtimes.py [--rounds 3] [--requests 400]

Both serve the shipped int8 network through OpenVINO (DETECTOR_BACKEND=openvino-int8); only the
path around it differs (Pillow fit and numpy post-processing, or torch's). Each round starts a
real uvicorn process per runtime, in turn (A B A B ...), and sends one-image requests of VOC val
JPEGs at each concurrency from this client process; the best round of each is reported, with the
server's RSS after the load. Also: val mAP@0.5 of each path on the same images, and how far the
boxes of the detections the two paths share lie apart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_service import load, real_jpegs  # noqa: E402
from tests.support.serving import Server  # noqa: E402


def serve_round(runtime: str, weights: Path, images: list, levels: list[int], requests: int) -> dict:
    env = {"DETECTOR_RUNTIME": runtime, "DETECTOR_BACKEND": "openvino-int8"}
    figures: dict = {}
    with Server(weights, **env) as server:
        idle = server.rss_kib() / 1024
        asyncio.run(load(server.url, images, 4, 40))  # warm
        for level in levels:
            figures[level] = asyncio.run(load(server.url, images, level, requests))
        figures["rss"] = (idle, server.rss_kib() / 1024)
    return figures


def boxes_apart(val: Path, weights: Path, count: int) -> dict[str, float]:
    """Both paths on ``count`` val JPEGs decoded as the service does: the detections (score >= 0.25)
    of the torch path matched to the numpy path's by class and nearest box."""
    from app.imaging.decoding import decode_image_bytes
    from model.config import DetectParams
    from model.runtime import open_predictor

    numpy_path, _ = open_predictor(weights, "cpu", "openvino-int8", runtime="numpy")
    torch_path, _ = open_predictor(weights, "cpu", "openvino-int8", runtime="torch")
    params = DetectParams(0.25, 0.45, 100)
    gaps: list[float] = []
    unmatched = total = 0
    for _, data in real_jpegs(val, Path("/nonexistent"), count):
        decoded = decode_image_bytes(data, 10**8)
        (a,) = numpy_path([numpy_path.fit(decoded.stored, decoded.orientation)], params)
        (b,) = torch_path([torch_path.fit(decoded.stored, decoded.orientation)], params)
        for box, label in zip(b.boxes_xyxy.numpy(), b.labels.numpy(), strict=True):
            total += 1
            same = np.flatnonzero(a.labels == label)
            if not len(same):
                unmatched += 1
                continue
            gaps.append(float(np.abs(a.boxes_xyxy[same] - box).max(axis=1).min()))
    gaps.sort()
    return {
        "detections": total,
        "unmatched": unmatched,
        "median_px": gaps[len(gaps) // 2],
        "p95_px": gaps[int(0.95 * len(gaps))],
        "within_0.5_px": sum(g <= 0.5 for g in gaps) / len(gaps),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "VOCdevkit")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-images", type=int, default=1002, help="val JPEGs for the box comparison")
    args = parser.parse_args()

    images = real_jpegs(args.data, Path("/nonexistent"), args.images)
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for runtime in ("torch", "numpy"):
            figures = serve_round(runtime, args.weights, images, args.concurrency, args.requests)
            print(
                f"round {round_ + 1} {runtime}: "
                + ", ".join(
                    f"c={c} {figures[c]['images_per_s']:.1f} img/s p50 {figures[c]['p50']:.1f} ms"
                    for c in args.concurrency
                ),
                flush=True,
            )
            kept = best.setdefault(runtime, {})
            for c in args.concurrency:
                if c not in kept or figures[c]["images_per_s"] > kept[c]["images_per_s"]:
                    kept[c] = figures[c]
            kept["rss"] = figures["rss"]
    print(
        "\n| runtime | "
        + " | ".join(f"c={c} images/s (p50 ms)" for c in args.concurrency)
        + " | RSS idle / after, MiB |"
    )
    print("|---|" + "---|" * (len(args.concurrency) + 1))
    for runtime in ("torch", "numpy"):
        row = best[runtime]
        cells = " | ".join(f"{row[c]['images_per_s']:.1f} ({row[c]['p50']:.1f})" for c in args.concurrency)
        print(f"| {runtime} | {cells} | {row['rss'][0]:.0f} / {row['rss'][1]:.0f} |")
    ratios = ", ".join(
        f"c={c} {best['numpy'][c]['images_per_s'] / best['torch'][c]['images_per_s']:.2f}"
        for c in args.concurrency
    )
    print(f"\nnumpy / torch images/s: {ratios}")
    if args.compare_images:
        apart = boxes_apart(args.data, args.weights, args.compare_images)
        print(f"boxes apart on {args.compare_images} val JPEGs: {apart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

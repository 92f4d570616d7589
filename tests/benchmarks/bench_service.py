"""Benchmark: the bare network against the service over HTTP, measured in one run.

    python tests/benchmarks/bench_service.py [--device cpu] [--soak 10000]

(a) the bare network at the served input size: batch-1 latency and the best batched images/s
    (on CPU the plain fp32 eager network a user would write; on CUDA fp16 channels_last);
(b) the service (a real uvicorn process) over HTTP from this separate client process at each
    concurrency: images/s and p50/p95/p99 latency, one real JPEG per request;
(c) the ratios (b)/(a); (d) the server's RSS after warm-up and after ``--soak`` more requests.
Prints a markdown table. Real JPEGs come from ../shared (VOC val and samples) by path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from model.checkpoint import load_weights  # noqa: E402
from model.predictor import resolve_device  # noqa: E402
from tests.serving import Server  # noqa: E402


def real_jpegs(data: Path, samples: Path, count: int) -> list[tuple[str, bytes]]:
    names = (data / "VOC2007" / "ImageSets" / "Main" / "val.txt").read_text().split()[:count]
    files = [data / "VOC2007" / "JPEGImages" / f"{n}.jpg" for n in names]
    files += sorted(p for p in samples.glob("*.jpg") if p.stat().st_size < 1_000_000)
    return [(p.name, p.read_bytes()) for p in files]


def time_it(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bare_network(weights: Path, device: torch.device) -> tuple[float, float, int]:
    """(batch-1 median ms, best images/s, its batch size) of the plain network."""
    loaded = load_weights(weights)
    size = loaded.config.input_size
    network = loaded.network.eval().to(device)
    dtype = torch.float32
    if device.type == "cuda":
        dtype = torch.float16
        network = network.to(dtype=dtype, memory_format=torch.channels_last)

    def run(batch: torch.Tensor) -> None:
        with torch.inference_mode():
            network(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    one = torch.randn(1, 3, size, size, device=device, dtype=dtype)
    time_it(lambda: run(one), 5)
    batch1_ms = statistics.median(time_it(lambda: run(one), 40)) * 1000
    best, best_batch = 0.0, 1
    for batch_size in (1, 2, 4, 8, 16, 32) + ((64, 128, 256) if device.type == "cuda" else ()):
        batch = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
        time_it(lambda b=batch: run(b), 2)
        seconds = statistics.median(time_it(lambda b=batch: run(b), 5 if device.type == "cpu" else 20))
        if batch_size / seconds > best:
            best, best_batch = batch_size / seconds, batch_size
    return batch1_ms, best, best_batch


async def load(
    url: str, images: list[tuple[str, bytes]], concurrency: int, requests: int
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal failures
            for k in counter:
                name, data = images[k % len(images)]
                start = time.perf_counter()
                response = await client.post("/detect", files={"image": (name, data, "image/jpeg")})
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "images_per_s": len(latencies) / elapsed,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "failures": failures,
        "requests": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "VOCdevkit")
    parser.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    parser.add_argument("--images", type=int, default=200, help="VOC val JPEGs to cycle through")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--requests", type=int, default=0, help="per level (default: max(60, 4 x concurrency))"
    )
    parser.add_argument("--soak", type=int, default=10_000, help="requests between the two RSS readings")
    parser.add_argument(
        "--env", nargs="*", default=[], help="extra DETECTOR_*=value settings for the service"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    images = real_jpegs(args.data, args.samples, args.images)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"machine: {machine}; torch {torch.__version__}; {len(images)} real JPEGs", flush=True)

    batch1_ms, bare_best, bare_batch = bare_network(args.weights, device)
    print(
        f"(a) bare network: batch-1 {batch1_ms:.1f} ms; best {bare_best:.1f} images/s at batch {bare_batch}",
        flush=True,
    )

    extra = dict(item.split("=", 1) for item in args.env)
    quiet = ("--log-level", "warning", "--no-access-log")
    service = Server(args.weights, str(device), quiet, DETECTOR_LOG_LEVEL="warning", **extra)
    try:
        service.wait_ready(timeout=180)
        asyncio.run(load(service.url, images, 8, 100))  # warm-up
        rss_warm = service.rss_kib() / 1024
        rows = []
        for concurrency in args.concurrency:
            requests = args.requests or max(60, 4 * concurrency)
            result = asyncio.run(load(service.url, images, concurrency, requests))
            rows.append((concurrency, result))
            print(f"(b) c={concurrency}: {result}", flush=True)
        rss_soak = float("nan")
        if args.soak:
            soak = asyncio.run(load(service.url, images, 8, args.soak))
            rss_soak = service.rss_kib() / 1024
            print(f"(d) soak: {soak['requests']} requests, {soak['failures']} failures", flush=True)
    finally:
        service.stop()

    print(
        "\n| concurrency | images/s | p50 ms | p95 ms | p99 ms | non-200 | images/s ÷ bare best | "
        "p50 ÷ bare batch-1 |\n|---|---|---|---|---|---|---|---|"
    )
    for concurrency, r in rows:
        print(
            f"| {concurrency} | {r['images_per_s']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
            f"{int(r['failures'])} | {r['images_per_s'] / bare_best:.2f} | {r['p50'] / batch1_ms:.2f} |"
        )
    print(
        f"\nbare network ({'fp16 channels_last' if device.type == 'cuda' else 'fp32 eager'}, "
        f"input {load_weights(args.weights).config.input_size}): batch-1 {batch1_ms:.1f} ms, "
        f"best {bare_best:.1f} images/s (batch {bare_batch})"
    )
    growth = (rss_soak / rss_warm - 1) * 100 if args.soak else float("nan")
    print(
        f"service RSS: {rss_warm:.0f} MiB after warm-up, {rss_soak:.0f} MiB after {args.soak} more requests "
        f"({growth:+.1f}%)"
    )
    print(f"machine: {machine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

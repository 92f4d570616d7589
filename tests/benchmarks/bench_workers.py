"""Benchmark: does this CPU gain from more server processes? One process (the network on every
core) against ``--workers N`` (N uvicorn processes, each with its own copy of the network on
``cores / N`` threads) or against ``--fronts N`` (the launcher: N HTTP fronts handing fitted pixels
to one engine with the network on every core), numpy runtime, one-image requests of VOC val JPEGs
at 1 and 8 connections, in turn, twice.

    python tests/benchmarks/bench_workers.py [--workers 2]
    python tests/benchmarks/bench_workers.py --fronts 1 2 [--backend null]

The load generator runs here, on the same cores (its share is what ``bench_service.py`` reports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_service import load, real_jpegs  # noqa: E402
from tests.support.serving import free_port  # noqa: E402


def serve_and_load(
    workers: int, threads: int, images: list, requests: int, fronts: int | None = None, backend: str = "auto"
) -> dict:
    port = free_port()
    env = {
        **os.environ,
        "DETECTOR_RUNTIME": "numpy",
        "DETECTOR_TORCH_THREADS": str(threads),
        "DETECTOR_BACKEND": backend,
    }
    if fronts is None:
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "app.protocol:GuardedHttpTools"]
        command += ["--workers", str(workers)]
    else:
        command = [sys.executable, "-m", "app", "--fronts", str(fronts)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = 0
        while ready < 20:  # twenty answers in a row: every worker is up
            try:
                ready = ready + 1 if httpx.get(f"{url}/readyz", timeout=1).status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.1)
        asyncio.run(load(url, images, 8, 80))
        return {c: asyncio.run(load(url, images, c, requests)) for c in (1, 8)}
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "VOCdevkit")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fronts", type=int, nargs="+", default=None, help="compare the launcher's fronts")
    parser.add_argument("--backend", default="auto", help="openvino-int8 (auto) or null")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    images = real_jpegs(args.data, Path("/nonexistent"), 200)
    cores = len(os.sched_getaffinity(0))
    for round_ in range(2):
        if args.fronts is not None:
            for fronts in (0, *args.fronts):
                figures = serve_and_load(1, 0, images, args.requests, fronts, args.backend)
                report(round_, f"launcher, {fronts} fronts ({args.backend})", figures)
            continue
        for workers in (1, args.workers):
            threads = 0 if workers == 1 else max(1, cores // workers)
            figures = serve_and_load(workers, threads, images, args.requests, None, args.backend)
            report(round_, f"{workers} process(es) x {threads or cores} threads", figures)
    return 0


def report(round_: int, what: str, figures: dict) -> None:
    cells = ", ".join(
        f"c={c} {f['images_per_s']:.1f} images/s p50 {f['p50']:.1f} ms" for c, f in figures.items()
    )
    print(f"round {round_ + 1}, {what}: {cells}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

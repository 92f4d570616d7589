"""Benchmark: does this CPU gain from more server processes? One uvicorn process (the network on
every core) against ``--workers N`` (N processes, each with its own copy of the network on
``cores / N`` threads), numpy runtime, one-image requests of VOC val JPEGs, in turn, twice.

    python tests/benchmarks/bench_workers.py [--workers 2]

Not the serving-engine design (fronts handing pixels to one engine per device): a measure of
what more processes buy on this machine before building it.
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


def serve_and_load(workers: int, threads: int, images: list, requests: int) -> dict:
    port = free_port()
    env = {**os.environ, "DETECTOR_RUNTIME": "numpy", "DETECTOR_TORCH_THREADS": str(threads)}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "app.protocol:GuardedHttpTools"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", str(workers)],
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
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    images = real_jpegs(args.data, Path("/nonexistent"), 200)
    cores = len(os.sched_getaffinity(0))
    for round_ in range(2):
        for workers in (1, args.workers):
            threads = 0 if workers == 1 else max(1, cores // workers)
            figures = serve_and_load(workers, threads, images, args.requests)
            cells = ", ".join(
                f"c={c} {f['images_per_s']:.1f} images/s p50 {f['p50']:.1f} ms" for c, f in figures.items()
            )
            print(
                f"round {round_ + 1}, {workers} process(es) x {threads or cores} threads: {cells}", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

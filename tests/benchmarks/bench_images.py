"""Benchmark: the two images side by side, each in a real container on the sandbox engine.

    python tests/benchmarks/bench_images.py [--build] [--requests 300]

With ``--build``: each target's cold build (``--no-cache``) and its rebuild after a code-only
change (a comment appended to app/__init__.py, then restored). Then for each image: its size, the
seconds from ``docker run`` to ``/readyz`` 200 and to Docker's ``healthy``, RSS idle and after the
load, and one-image requests of VOC val JPEGs at concurrency 1 and 8 from this process (both
images on the CPU: the GPU image falls back to it).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_service import load, real_jpegs  # noqa: E402
from tests.support.containers import docker, inspect  # noqa: E402

URL = "http://127.0.0.1:8000"


def build(target: str) -> tuple[float, float]:
    start = time.monotonic()
    docker(
        "build", "--no-cache", "--network", "host", "--target", target, "-t", f"voc-detector:{target}", "."
    )
    cold = time.monotonic() - start
    marker = ROOT / "app" / "__init__.py"
    original = marker.read_text()
    try:
        marker.write_text(original + "# rebuild\n")
        start = time.monotonic()
        docker("build", "--network", "host", "--target", target, "-t", f"voc-detector:{target}", ".")
        rebuild = time.monotonic() - start
    finally:
        marker.write_text(original)
    docker("build", "--network", "host", "--target", target, "-t", f"voc-detector:{target}", ".")
    return cold, rebuild


def rss_mib(container: str) -> float:
    status = docker("exec", container, "cat", "/proc/1/status").stdout
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def measure(tag: str, images: list, requests: int) -> dict:
    start = time.monotonic()
    container = docker("run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp", tag).stdout.strip()
    try:
        while True:
            try:
                if httpx.get(f"{URL}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        ready = time.monotonic() - start
        while inspect(container, "{{.State.Health.Status}}") != "healthy":
            time.sleep(0.1)
        healthy = time.monotonic() - start
        idle = rss_mib(container)
        asyncio.run(load(URL, images, 4, 40))
        figures = {c: asyncio.run(load(URL, images, c, requests)) for c in (1, 8)}
        return {
            "size_gb": int(inspect(tag, "{{.Size}}")) / 1e9,
            "ready_s": ready,
            "healthy_s": healthy,
            "rss": (idle, rss_mib(container)),
            "runtime": httpx.get(f"{URL}/model", timeout=5).json()["runtime"],
            **figures,
        }
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "VOCdevkit")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    targets = ("cpu", "gpu")
    builds = {t: build(t) for t in targets} if args.build else {}
    for target, (cold, rebuild) in builds.items():
        print(f"{target}: cold build {cold:.1f} s, rebuild after a code change {rebuild:.1f} s", flush=True)
    images = real_jpegs(args.data, Path("/nonexistent"), 200)
    rows = {t: measure(f"voc-detector:{t}", images, args.requests) for t in targets}
    columns = ["image", "runtime", "size", "run -> ready", "run -> healthy", "RSS idle / after load"]
    columns += ["c=1 images/s (p50)", "c=8 images/s (p50)"]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for target, row in rows.items():
        cells = [target, row["runtime"], f"{row['size_gb']:.2f} GB", f"{row['ready_s']:.1f} s"]
        cells += [f"{row['healthy_s']:.1f} s", f"{row['rss'][0]:.0f} / {row['rss'][1]:.0f} MiB"]
        cells += [f"{row[c]['images_per_s']:.1f} ({row[c]['p50']:.1f} ms)" for c in (1, 8)]
        print("| " + " | ".join(cells) + " |")
    ratio = ", ".join(
        f"c={c} {rows['cpu'][c]['images_per_s'] / rows['gpu'][c]['images_per_s']:.2f}" for c in (1, 8)
    )
    print(f"\nCPU image / GPU image (torch on the CPU) images/s: {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

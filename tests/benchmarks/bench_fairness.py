"""A camera beside a bulk client: Frigate's DeepStack detector waits 0.1 s for an answer.

The bulk client (its own process) sends 16-image requests to ``/detect`` back to back; the camera
posts one image every 0.2 s to ``/v1/vision/detection`` with a 0.1 s timeout, as Frigate does.
Prints the camera's timeouts and latencies, and the bulk client's images/s beside what it gets
alone, for each server given (``--root`` checkouts, e.g. an older commit, side by side in one run).

    python tests/benchmarks/bench_fairness.py --jpegs ../shared/samples [--root /tmp/old] [--frames 50]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import serving


def bulk_client(url: str, jpegs: list[bytes], stop_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    files = [("image", (f"{k}.jpg", jpegs[k % len(jpegs)], "image/jpeg")) for k in range(16)]
    images = 0
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < stop_at:
            if client.post("/detect", files=files).status_code == 200:
                images += 16
    out.put(images / (time.monotonic() - start))


def run_bulk(url: str, jpegs: list[bytes], seconds: float) -> tuple[mp.Process, mp.Queue]:  # type: ignore[type-arg]
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    process = mp.Process(target=bulk_client, args=(url, jpegs, time.monotonic() + seconds, out))
    process.start()
    return process, out


def camera(url: str, jpeg: bytes, frames: int) -> tuple[int, list[float]]:
    timeouts, latencies = 0, []
    with httpx.Client(base_url=url, timeout=0.1) as client:
        client.post("/v1/vision/detection", files={"image": ("f.jpg", jpeg)}, timeout=10)  # connect, warm
        for _ in range(frames):
            start = time.monotonic()
            try:
                answer = client.post(
                    "/v1/vision/detection", files={"image": ("frame.jpg", jpeg, "image/jpeg")}
                )
                assert answer.status_code == 200, answer.text
                latencies.append((time.monotonic() - start) * 1000)
            except httpx.TimeoutException:
                timeouts += 1
            time.sleep(max(0.0, 0.2 - (time.monotonic() - start)))
    return timeouts, latencies


def measure(root: Path, weights: Path, jpegs: list[bytes], frames: int, env: dict[str, str]) -> str:
    serving.ROOT = root
    with serving.Server(weights, **env) as server:
        process, out = run_bulk(server.url, jpegs, 12.0)
        process.join()
        alone = out.get()
        seconds = frames * 0.2 + 4
        process, out = run_bulk(server.url, jpegs, seconds)
        time.sleep(2.0)
        timeouts, latencies = camera(server.url, jpegs[0], frames)
        process.join()
        beside = out.get()
    p50 = statistics.median(latencies) if latencies else float("nan")
    worst = max(latencies) if latencies else float("nan")
    return (
        f"camera: {timeouts}/{frames} timed out (0.1 s), answered p50 {p50:.0f} ms, max {worst:.0f} ms; "
        f"bulk: {beside:.1f} images/s beside the camera, {alone:.1f} alone ({beside / alone:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jpegs", type=Path, required=True, help="a folder of JPEG photos")
    parser.add_argument(
        "--root", type=Path, action="append", help="checkouts to serve from (default: this one)"
    )
    parser.add_argument("--weights", type=Path, default=serving.ROOT / "weights")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the servers")
    args = parser.parse_args()
    jpegs = [path.read_bytes() for path in sorted(args.jpegs.glob("*.jpg"))][:16]
    env = dict(item.split("=", 1) for item in args.env)
    for root in args.root or [serving.ROOT]:
        print(f"{root}: {measure(root.resolve(), args.weights.resolve(), jpegs, args.frames, env)}")


if __name__ == "__main__":
    main()

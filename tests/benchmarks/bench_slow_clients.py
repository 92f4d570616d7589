"""What slow and greedy clients can hold, with the default settings, against the shipped model.

Prints, for docs/operations.md ("Limits"):
- how long an upload dripping 1 byte a second holds its upload slot before the minimum rate ends it;
- how long SIGTERM takes to exit with such an upload in flight (the drain timeout, not the body's);
- ``/healthz`` latency (p50 and max of probes every 10 ms) while answers of 16,000 detections
  (16 small images, ``score_threshold=0``, ``iou_threshold=1``, ``max_detections=1000``) are made.

    python tests/benchmarks/bench_slow_clients.py [--weights weights/]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import attacks
from tests.support.serving import ROOT, Server


def drip(port: int, pause: float = 1.0) -> tuple[float, bytes]:
    """Seconds until the server answers a body sent a byte every ``pause`` s, and the answer's start."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(
            b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.settimeout(pause)
        while True:
            try:
                sock.sendall(b"\xff")
                answer = sock.recv(200)
                return time.monotonic() - start, answer
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start, b""


def healthz_during_large_answers(url: str, answers: int = 5) -> tuple[float, float, float]:
    crowd = [("image", (f"{k}.png", attacks.black_png(32, 32), "image/png")) for k in range(16)]
    params = {"score_threshold": 0, "iou_threshold": 1, "max_detections": 1000}
    probes: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=url) as client:
            while not done.is_set():
                start = time.perf_counter()
                client.get("/healthz")
                probes.append((time.perf_counter() - start) * 1000)
                time.sleep(0.01)

    thread = threading.Thread(target=probe)
    thread.start()
    took = []
    for _ in range(answers):
        start = time.perf_counter()
        answer = httpx.post(f"{url}/detect", params=params, files=crowd, timeout=120)
        took.append(time.perf_counter() - start)
        assert sum(len(r["detections"]) for r in answer.json()["results"]) == 16_000
    done.set()
    thread.join()
    return statistics.median(probes), max(probes), statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    args = parser.parse_args()
    with Server(args.weights) as server:
        held, answer = drip(server.port)
        first_line = answer.split(b"\r\n", 1)[0].decode()
        print(f"1 byte/s drip: answered after {held:.1f} s: {first_line}")
        p50, worst, answer_s = healthz_during_large_answers(server.url)
        print(
            f"/healthz during 16,000-detection answers: p50 {p50:.0f} ms, max {worst:.0f} ms "
            f"(each answer {answer_s:.2f} s, median)"
        )
    result: list[tuple[float, bytes]] = []
    # No minimum rate here, so that only the drain can end the upload (the worst case).
    with Server(args.weights, DETECTOR_MIN_UPLOAD_BYTES_PER_SECOND="0") as server:
        dripper = threading.Thread(target=lambda: result.append(drip(server.port)))
        dripper.start()
        time.sleep(1.0)
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=120)
        exited = time.monotonic() - start
        dripper.join(30)
        status = result[0][1].split(b"\r\n", 1)[0].decode() if result else "no answer"
        print(
            f"SIGTERM with a slow upload in flight: exit {code} after {exited:.1f} s; the upload got {status}"
        )


if __name__ == "__main__":
    main()

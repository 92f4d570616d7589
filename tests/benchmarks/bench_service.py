"""Benchmark: the bare network against the service over HTTP, measured in one run.

    python tests/benchmarks/bench_service.py [--device cpu] [--soak 10000]

(a) the bare network at the served input size: batch-1 latency and the best batched images/s
    (on CPU the plain fp32 eager network a user would write; on CUDA fp16 channels_last),
    measured before and after the service and the better of the two used;
(b) the service (a real uvicorn process) over HTTP from this separate client process at each
    concurrency: images/s and p50/p95/p99 latency, one real JPEG per multipart request, sent as
    prepared HTTP/1.1 bytes (``--client httpx`` for httpx, which costs the shared CPU more);
(c) the ratios (b)/(a); (d) the server's RSS after warm-up (at the highest concurrency) and after
    ``--soak`` more requests.
Prints a markdown table. Real JPEGs come from ../shared (VOC val and samples) by path.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
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
from tests.support.serving import Server  # noqa: E402


def real_jpegs(data: Path, samples: Path, count: int) -> list[tuple[str, bytes]]:
    val = data / "VOC2007" / "ImageSets" / "Main" / "val.txt"
    if not val.exists():
        raise SystemExit(f"no {val}: pass --data VOCDEVKIT (make bench VOCDEVKIT=...) or --jpegs DIR")
    names = val.read_text().split()[:count]
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
        seconds = statistics.median(time_it(lambda b=batch: run(b), 10 if device.type == "cpu" else 20))
        if batch_size / seconds > best:
            best, best_batch = batch_size / seconds, batch_size
    return batch1_ms, best, best_batch


def multipart_post(url: str, name: str, data: bytes) -> bytes:
    """A whole ``POST /detect`` request (HTTP/1.1, keep-alive) with one multipart ``image`` part."""
    boundary = b"bench-7d1f0c2a9e"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="image"; filename="' + name.encode() + b'"\r\n',
            b"Content-Type: image/jpeg\r\n\r\n",
            data,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    host = httpx.URL(url).netloc.decode()
    head = (
        f"POST /detect HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def post_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one prepared request on an open connection; the response's status (its body is read)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    status = int(lines[0].split()[1])
    if status == 200 and b'"detections":' not in body:
        raise RuntimeError(f"unexpected 200 body: {body[:80]!r}")
    return status


async def load(
    url: str, images: list[tuple[str, bytes]], concurrency: int, requests: int, client: str = "raw"
) -> dict[str, float]:
    """``requests`` POSTs over ``concurrency`` keep-alive connections, one real JPEG each.

    ``raw`` sends prepared HTTP/1.1 bytes on asyncio streams: the client shares the machine's
    cores with the server, and this costs it about a fifth of the CPU time of ``httpx``.
    """
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    prepared = [multipart_post(url, name, data) for name, data in images]

    async def raw_worker() -> None:
        nonlocal failures
        address = httpx.URL(url)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            for k in counter:
                start = time.perf_counter()
                status = await post_raw(reader, writer, prepared[k % len(prepared)])
                latencies.append(time.perf_counter() - start)
                failures += status != 200
        finally:
            writer.close()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def httpx_worker() -> None:
            nonlocal failures
            for k in counter:
                name, data = images[k % len(images)]
                start = time.perf_counter()
                response = await http.post("/detect", files={"image": (name, data, "image/jpeg")})
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        worker = raw_worker if client == "raw" else httpx_worker
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
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
        "client_cpu_ms": cpu / max(1, len(latencies)) * 1000,
    }


def _decode_worker(images: list[tuple[str, bytes]], input_size: int, seconds: float) -> int:
    from app.imaging.decoding import prepare

    torch.set_num_threads(1)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        name, data = images[count % len(images)]
        prepare(data, 40_000_000, input_size, name, 30.0)
        count += 1
    return count


def decode_floor(images: list[tuple[str, bytes]], input_size: int, seconds: float = 5.0) -> float:
    """Images/s of bare decode + fit (the service's own ``prepare``) on every core: one process per
    core, nothing else. What any serving path on this CPU can at best approach."""
    cores = os.cpu_count() or 1
    with concurrent.futures.ProcessPoolExecutor(cores) as pool:
        counts = list(pool.map(_decode_worker, [images] * cores, [input_size] * cores, [seconds] * cores))
    return sum(counts) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "VOCdevkit")
    parser.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    parser.add_argument("--images", type=int, default=200, help="VOC val JPEGs to cycle through")
    parser.add_argument("--jpegs", type=Path, default=None, help="use the *.jpg of this folder instead")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument(
        "--requests", type=int, default=0, help="per level (default: max(300, 8 x concurrency))"
    )
    parser.add_argument("--soak", type=int, default=10_000, help="requests between the two RSS readings")
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="how the load client sends requests"
    )
    parser.add_argument(
        "--env", nargs="*", default=[], help="extra DETECTOR_*=value settings for the service"
    )
    parser.add_argument(
        "--fronts", type=int, default=None, help="serve with python -m app --fronts N (the engine design)"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.jpegs is not None:
        images = [(p.name, p.read_bytes()) for p in sorted(args.jpegs.glob("*.jpg"))[: args.images]]
    else:
        images = real_jpegs(args.data, args.samples, args.images)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"machine: {machine}; torch {torch.__version__}; {len(images)} real JPEGs", flush=True)

    bare = [bare_network(args.weights, device)]
    print(f"(a) bare network before the service: {bare[0]}", flush=True)

    extra = dict(item.split("=", 1) for item in args.env)
    quiet: tuple[str, ...] = ("--log-level", "warning", "--no-access-log")
    if args.fronts is not None:  # the launcher takes the log level from DETECTOR_LOG_LEVEL
        quiet = ("--no-access-log",)
    service = Server(
        args.weights, str(device), quiet, fronts=args.fronts, DETECTOR_LOG_LEVEL="warning", **extra
    )
    try:
        service.wait_ready(timeout=180)
        # Warm-up at the highest concurrency, so that the peak working set (full batches, a full
        # queue) is reached before the first RSS reading and growth after it means a leak.
        top = max(args.concurrency)
        asyncio.run(load(service.url, images, top, max(300, 4 * top), args.client))
        rss_warm = service.tree_rss_kib() / 1024  # with fronts: all the launcher's processes
        rows = []
        for concurrency in args.concurrency:
            requests = args.requests or max(300, 8 * concurrency)
            result = asyncio.run(load(service.url, images, concurrency, requests, args.client))
            rows.append((concurrency, result))
            print(f"(b) c={concurrency}: {result}", flush=True)
        rss_soak = float("nan")
        if args.soak:
            soak = asyncio.run(load(service.url, images, 8, args.soak, args.client))
            rss_soak = service.tree_rss_kib() / 1024
            print(f"(d) soak: {soak['requests']} requests, {soak['failures']} failures", flush=True)
    finally:
        service.stop()
    # The reference is measured before and after the service; its better figures are used, so a
    # noisy reading can only make the ratios look worse.
    bare.append(bare_network(args.weights, device))
    print(f"(a) bare network after the service: {bare[1]}", flush=True)
    input_size = load_weights(args.weights).config.input_size
    floor = decode_floor(images, input_size)
    print(f"(e) floor: bare decode + fit on {os.cpu_count()} cores: {floor:.1f} images/s", flush=True)
    batch1_ms = min(b[0] for b in bare)
    bare_best, bare_batch = max((b[1], b[2]) for b in bare)

    print(
        "\n| concurrency | images/s | p50 ms | p95 ms | p99 ms | non-200 | images/s ÷ bare best | "
        "p50 ÷ bare batch-1 | images/s ÷ decode floor | client CPU ms/request |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for concurrency, r in rows:
        print(
            f"| {concurrency} | {r['images_per_s']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
            f"{int(r['failures'])} | {r['images_per_s'] / bare_best:.2f} | {r['p50'] / batch1_ms:.2f} | "
            f"{r['images_per_s'] / floor:.2f} | {r['client_cpu_ms']:.2f} |"
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

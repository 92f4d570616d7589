"""A siege: hostile clients send every kind of round-2 and round-3 attack while one normal client
measures.

Used by ``test_siege.py`` (bounded, on the shipped weights) and runnable as a script for the
figures in docs/operations.md: ``python -m tests.support.siege --seconds 45``.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import attacks
from tests.support.serving import ROOT, Server

Attack = Callable[[str, int], int]  # (base url, port) -> HTTP status


def status_of(answer: bytes) -> int:
    """The status of an HTTP answer's first bytes; 0 when there is none."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _raw(port: int, request: bytes, timeout: float = 30.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return status_of(sock.recv(256))


def build_attacks() -> dict[str, Attack]:
    black = attacks.black_png(8000, 5000)
    amplification = [("image", (f"{k}.png", black, "image/png")) for k in range(16)]
    scans = attacks.many_scan_jpeg(300, (2048, 2048))
    rle = attacks.rle8_bmp(16000, 2500)
    flood = attacks.png_chunk_flood(100_000)
    exif = list(attacks.exif_cases().values())
    big_photo = attacks.photo_like(8000, 5000, quality=85)
    tiny = attacks.black_png(8, 8)
    too_many = [("image", (f"{k}.png", tiny, "image/png")) for k in range(33)]
    charset = b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nxx\r\n--zz--\r\n'

    def post(url: str, **kwargs: object) -> int:
        return httpx.post(f"{url}/detect", timeout=120, **kwargs).status_code  # type: ignore[arg-type]

    # Thin and tall RGBA: past the long-axis reduction and costed by rows (the 40,000,000-pixel
    # ones are in test_server_bounds.py; here they would be CPU more than an attack).
    thin = [
        ("image", ("thin.png", attacks.blank_png(8_000_000, 1), "image/png")),
        ("image", ("tall.png", attacks.blank_png(1, 8_000_000), "image/png")),
    ]
    crowd = [("image", (f"{k}.png", attacks.black_png(32, 32), "image/png")) for k in range(16)]
    unread = b"\xff" * 300_000

    def unread_then_pipelined(url: str, port: int) -> int:
        """An early answer (a bad query) with the body unread, a request pipelined behind it: the
        second answer's status (200, never a 431)."""
        head = b"POST /detect?score_threshold=7 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        request = head + b"Content-Length: %d\r\n\r\n" % len(unread) + unread
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        second = answer.find(b"HTTP/1.1", 8)
        return status_of(answer[second:]) if second > 0 else 0

    def early_answer_then_close(url: str, port: int) -> int:
        head = b"POST /detect?classes=unicorn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(unread)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head)
            time.sleep(0.1)
            sock.sendall(unread)  # a reset here would be an error, counted apart
            return status_of(sock.recv(256))

    def drip(url: str, port: int) -> int:
        """A body at about 5 bytes/s: cut by the minimum rate after its grace (408)."""
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            head = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            sock.sendall(head + b"Content-Length: 5000\r\n\r\n")
            sock.settimeout(0.2)
            for _ in range(300):
                try:
                    sock.sendall(b"\xff")
                    if answer := sock.recv(256):
                        return status_of(answer)
                except TimeoutError:
                    continue
        return 0

    def hang_up_after_body(url: str, port: int) -> int:
        """The whole body of 16 images, then the client goes: nothing to answer (reported as 499)."""
        built = httpx.Request("POST", f"{url}/detect", files=crowd)
        body = built.read()
        head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: {built.headers['content-type']}\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return 499

    def slowloris(url: str, port: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"POST /detect HTTP/1.1\r\nHost: x\r\n")
            for _ in range(3):
                time.sleep(0.5)
                sock.sendall(b"X-Slow: 1\r\n")
            answer = sock.recv(256)  # the server's header timeout ends it
        return status_of(answer)

    return {
        "16 x 40 MP PNG parts": lambda url, port: post(url, files=amplification),
        "JPEG with 300 scans": lambda url, port: post(url, files={"image": ("s.jpg", scans)}),
        "RLE8 BMP of EOL codes": lambda url, port: post(url, files={"image": ("r.bmp", rle)}),
        "PNG chunk flood": lambda url, port: post(url, files={"image": ("f.png", flood)}),
        "bad EXIF": lambda url, port: post(url, files={"image": ("e", random.choice(exif))}),
        "charset=punycode": lambda url, port: post(
            url,
            content=charset,
            headers={"Content-Type": "multipart/form-data; boundary=zz; charset=punycode"},
        ),
        "40 MP format=png": lambda url, port: post(
            url, params={"format": "png"}, files={"image": ("big.jpg", big_photo)}
        ),
        "33 parts": lambda url, port: post(url, files=too_many),
        "classes=,": lambda url, port: post(url, params={"classes": ","}, files={"image": ("t.png", tiny)}),
        "70 KB query": lambda url, port: _raw(
            port, b"GET /healthz?q=" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"
        ),
        "8 MB header": lambda url, port: _raw(
            port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n"
        ),
        "slowloris": slowloris,
        "unread body, then pipelined": unread_then_pipelined,
        "early answer, conn. close": early_answer_then_close,
        "5 bytes/s drip": drip,
        "hang up after body": hang_up_after_body,
        "thin RGBA PNGs": lambda url, port: post(url, files=thin),
        "16,000 detections": lambda url, port: post(
            url, params={"score_threshold": 0, "iou_threshold": 1, "max_detections": 1000}, files=crowd
        ),
    }


@dataclass
class Report:
    idle_ms: list[float]
    busy_ms: list[float]
    normal_statuses: Counter[int]
    hostile_statuses: Counter[tuple[str, int]]
    hostile_errors: Counter[str] = field(default_factory=Counter)
    peak_rss_mib: float = 0.0
    ready_after: int = 0

    @property
    def five_xx(self) -> int:
        return sum(n for (_, status), n in self.hostile_statuses.items() if status >= 500) + sum(
            n for status, n in self.normal_statuses.items() if status >= 500
        )

    def summary(self) -> str:
        idle, busy = statistics.median(self.idle_ms), statistics.median(self.busy_ms)
        by_attack: dict[str, Counter[int]] = {}
        for (name, status), n in self.hostile_statuses.items():
            by_attack.setdefault(name, Counter())[status] += n
        lines = [
            f"normal client: {sum(self.normal_statuses.values())} requests, "
            f"statuses {dict(self.normal_statuses)}; p50 idle {idle:.0f} ms, "
            f"under siege {busy:.0f} ms ({busy / idle:.1f}x)",
            f"hostile: {sum(self.hostile_statuses.values())} answers, 5xx {self.five_xx}, "
            f"client-side errors {dict(self.hostile_errors)}",
            *(f"  {name:24s} {dict(statuses)}" for name, statuses in sorted(by_attack.items())),
            f"peak RSS {self.peak_rss_mib:.0f} MiB; /readyz after: {self.ready_after}",
        ]
        return "\n".join(lines)


def normal_request(client: httpx.Client, photo: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    status = client.post("/detect", files={"image": ("photo.jpg", photo)}).status_code
    return status, (time.perf_counter() - start) * 1000


def siege(server: Server, seconds: float, hostile_clients: int = 16, seed: int = 0) -> Report:
    photo = attacks.photo_like(500, 375, quality=90)
    kinds = build_attacks()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            normal_request(client, photo)
        idle = [normal_request(client, photo)[1] for _ in range(20)]
    server.reset_peak_rss()
    hostile: Counter[tuple[str, int]] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker(index: int) -> None:
        rng = random.Random(seed + index)
        names = sorted(kinds)
        while time.monotonic() < deadline:
            name = rng.choice(names)
            try:
                status = kinds[name](server.url, server.port)
            except (httpx.HTTPError, OSError) as exc:
                with lock:
                    errors[f"{name}: {type(exc).__name__}"] += 1
                continue
            with lock:
                hostile[(name, status)] += 1

    threads = [threading.Thread(target=attacker, args=(k,), daemon=True) for k in range(hostile_clients)]
    for thread in threads:
        thread.start()
    normal: Counter[int] = Counter()
    busy: list[float] = []
    peak = 0
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while time.monotonic() < deadline:
            status, ms = normal_request(client, photo)
            normal[status] += 1
            busy.append(ms)
            peak = max(peak, server.peak_rss_kib())
    for thread in threads:
        thread.join(timeout=120)
    peak = max(peak, server.peak_rss_kib())
    ready = httpx.get(f"{server.url}/readyz", timeout=10).status_code
    return Report(idle, busy, normal, hostile, errors, peak / 1024, ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    args = parser.parse_args()
    with Server(args.weights) as server:
        print(siege(server, args.seconds, args.clients).summary())


if __name__ == "__main__":
    main()

"""Load against a real uvicorn process on 127.0.0.1, bounded in requests and time.

Many concurrent clients mix valid and hostile uploads: no 5xx, no dropped connection, RSS and
open file descriptors flat. Overloaded: fast 503 with Retry-After, then full recovery.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.corpus import Case, build
from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow  # real servers or training runs: not in make test-fast

CLIENTS = 16
MAX_REQUESTS = 600
MAX_SECONDS = 20.0


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("load-weights"), input_size=128, objectness_bias=6.0)


def hammer(url: str, cases: list, clients: int, max_requests: int, max_seconds: float, seed: int = 0):
    """Send up to ``max_requests`` from ``clients`` threads for at most ``max_seconds``."""
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    overload_ms: list[float] = []
    lock = threading.Lock()
    budget = iter(range(max_requests))
    deadline = time.monotonic() + max_seconds

    def worker(index: int) -> None:
        rng = random.Random(seed + index)
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    if next(budget, None) is None:
                        return
                case = rng.choice(cases)
                start = time.monotonic()
                try:
                    response = client.post("/detect", **case.request_kwargs())
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{case.name}: {type(exc).__name__}")
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 503:
                        assert response.headers.get("Retry-After")
                        overload_ms.append((time.monotonic() - start) * 1000)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return statuses, errors, overload_ms


def mixed_cases() -> list:
    hostile = [c for c in build() if c.name not in ("real decompression bomb", "3000x1", "1x2000")]
    valid = [c for c in build() if c.statuses == frozenset({200})]
    return hostile + valid * 3


def test_mixed_load_no_5xx_no_drops_flat_memory(weights: Path):
    with Server(weights) as server:
        cases = mixed_cases()
        hammer(server.url, cases, CLIENTS, 100, 10.0, seed=99)  # warm-up: allocator, threads, batch sizes
        rss_before, fds_before = server.rss_kib(), server.open_fds()
        start = time.monotonic()
        statuses, errors, _ = hammer(server.url, cases, CLIENTS, MAX_REQUESTS, MAX_SECONDS)
        elapsed = time.monotonic() - start
        time.sleep(0.5)  # let closed connections leave the fd table
        rss_after, fds_after = server.rss_kib(), server.open_fds()
        sent = sum(statuses.values()) + len(errors)
        print(
            f"\nload: {sent} requests in {elapsed:.1f} s from {CLIENTS} clients; statuses {dict(statuses)}; "
            f"errors {len(errors)}; RSS {rss_before} -> {rss_after} KiB; fds {fds_before} -> {fds_after}"
        )
        assert sent >= 100
        assert errors == []
        assert not [code for code in statuses if code >= 500]
        assert statuses[200] > 0
        assert rss_after < rss_before * 1.15
        assert fds_after <= fds_before + 4
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_overload_answers_503_fast_then_recovers(weights: Path):
    with Server(weights, DETECTOR_MAX_QUEUE_IMAGES="8", DETECTOR_MAX_BATCH_SIZE="4") as server:
        data = image_bytes(320, 240)
        parts = [("image", (f"{k}.jpg", data, "image/jpeg")) for k in range(4)]
        heavy = [Case("4 images", frozenset({200, 503}), files=parts)]
        statuses, errors, overload_ms = hammer(server.url, heavy, 32, 400, 15.0, seed=7)
        print(
            f"\noverload: statuses {dict(statuses)}; errors {len(errors)}; "
            f"503 latency median {sorted(overload_ms)[len(overload_ms) // 2] if overload_ms else 0:.1f} ms"
        )
        assert errors == []
        assert statuses[503] > 0 and statuses[200] > 0
        assert set(statuses) <= {200, 503}
        assert sorted(overload_ms)[len(overload_ms) // 2] < 250  # refused at once, not after queueing
        # Recovery: once the burst is over every request is served again.
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(10):
                assert client.post("/detect", files={"image": ("a.jpg", data)}).status_code == 200
            assert client.get("/readyz").status_code == 200

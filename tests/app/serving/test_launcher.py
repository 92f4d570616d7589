"""``python -m app``: HTTP fronts and one inference engine, as real processes.

The answers through the fronts equal the same requests sent alone and the answers of one
process; fronts import no torch; SIGTERM drains a request in flight through the engine; an
engine killed under load fails readiness, answers 503 at once (no request hangs), and the
launcher exits non-zero so that an orchestrator restarts it."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("w"), objectness_bias=3.0)


REQUESTS = [  # (images as (width, height, seed), query)
    ([(200, 150, 1)], {"score_threshold": "0.05"}),
    ([(90, 160, 2), (300, 200, 3), (64, 64, 4)], {"score_threshold": "0.2"}),
    ([(150, 150, 5)], {"score_threshold": "0.05", "classes": "person,dog"}),
    ([(320, 240, 6), (100, 80, 7)], {"iou_threshold": "0.3", "max_detections": "5"}),
]


def send(url: str, images: list[tuple[int, int, int]], query: dict[str, str]) -> list[object]:
    files = [("image", (f"{k}.png", image_bytes(w, h, seed=s))) for k, (w, h, s) in enumerate(images)]
    answer = httpx.post(f"{url}/detect", params=query, files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    return [result["detections"] for result in answer.json()["results"]]


def children(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def engine_pid(launcher: int) -> int:
    for pid in children(launcher):
        if "app.serving.engine" in Path(f"/proc/{pid}/cmdline").read_text():
            return pid
    raise AssertionError("no engine process")


def test_answers_through_the_fronts_equal_one_process_and_requests_sent_alone(weights: Path):
    with Server(weights, fronts=0) as single:
        expected = [send(single.url, images, query) for images, query in REQUESTS]
    with Server(weights, fronts=2) as server:
        alone = [send(server.url, images, query) for images, query in REQUESTS]
        assert alone == expected
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, server.url, *REQUESTS[k % len(REQUESTS)]) for k in range(32)]
            together = [f.result() for f in futures]
        assert together == [expected[k % len(REQUESTS)] for k in range(32)]
        card = httpx.get(f"{server.url}/model", timeout=10).json()
        assert card["runtime"] == "torch"  # the engine's
        engine = engine_pid(server.process.pid)
        fronts = [  # uvicorn's workers (its resource tracker is a child too)
            pid
            for pid in children(server.process.pid)
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        assert len(fronts) == 2
        for pid in fronts:  # the fronts hold no torch; the engine does (the torch runtime here)
            assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" in Path(f"/proc/{engine}/maps").read_text()
        # /metrics, whichever front answers it, has every process's series.
        sent = sum(len(images) for images, _ in REQUESTS) + sum(
            len(REQUESTS[k % len(REQUESTS)][0]) for k in range(32)
        )
        for _ in range(3):
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert f"detector_images_total {float(sent)}" in text
            engine_images = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("detector_engine_batch_size_sum")
            )
            assert engine_images >= sent  # the fronts' warm-up checks go through it too
            pids = {
                line.split('pid="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("detector_process_resident_memory_bytes{")
            }
            assert {str(engine), *map(str, fronts)} <= pids


def test_sigterm_drains_a_request_in_flight_through_the_engine(weights: Path):
    server = Server(weights, fronts=1)
    with server:
        images = [(640, 480, k) for k in range(16)]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(send, server.url, images, {})
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            assert len(future.result(timeout=60)) == 16
        assert server.process.wait(timeout=60) == 0, server.output()
        assert not [pid for pid in children(server.process.pid)]


def test_an_engine_killed_under_load_fails_readiness_and_the_launcher_exits_non_zero(weights: Path):
    with Server(weights, fronts=2) as server:
        expected = send(server.url, *REQUESTS[1])
        engine = engine_pid(server.process.pid)
        answers: list[tuple[int, float, object]] = []

        def client() -> None:
            for _ in range(40):
                start = time.monotonic()
                files = [
                    ("image", (f"{k}.png", image_bytes(w, h, seed=s)))
                    for k, (w, h, s) in enumerate(REQUESTS[1][0])
                ]
                try:
                    reply = httpx.post(f"{server.url}/detect", params=REQUESTS[1][1], files=files, timeout=30)
                except httpx.TransportError:
                    answers.append((0, time.monotonic() - start, None))  # the fronts stopping
                    continue
                body = reply.json()
                found = [r["detections"] for r in body["results"]] if reply.status_code == 200 else body
                answers.append((reply.status_code, time.monotonic() - start, found))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client) for _ in range(4)]
            time.sleep(1.0)
            os.kill(engine, signal.SIGKILL)
            for f in futures:
                f.result(timeout=120)
        code = server.process.wait(timeout=30)
        assert code == 1, server.output()
        assert "the inference engine exited" in server.output()
        ok = [found for status, _, found in answers if status == 200]
        assert ok and all(found == expected for found in ok)  # what was answered before the kill is right
        refused = [status for status, _, _ in answers if status != 200]
        assert refused and set(refused) <= {503, 0}
        assert max(seconds for _, seconds, _ in answers) < 10  # nobody waited for a dead engine


def test_fronts_zero_is_one_uvicorn_process(weights: Path):
    with Server(weights, fronts=0) as server:
        assert send(server.url, *REQUESTS[0])
        assert httpx.get(f"{server.url}/model", timeout=10).json()["runtime"] == "torch"
        assert not children(server.process.pid)


def test_a_hung_engine_is_killed_and_the_launcher_exits_non_zero(weights: Path):
    with Server(weights, fronts=1, DETECTOR_ENGINE_TIMEOUT_SECONDS="2") as server:
        assert send(server.url, *REQUESTS[0])
        engine = engine_pid(server.process.pid)
        os.kill(engine, signal.SIGSTOP)  # alive, answering nothing
        start = time.monotonic()
        files = [("image", ("a.png", image_bytes(100, 80)))]
        reply = httpx.post(f"{server.url}/detect", files=files, timeout=30)
        assert reply.status_code == 503 and time.monotonic() - start < 5
        assert server.process.wait(timeout=30) == 1, server.output()
        assert "does not answer" in server.output()

"""End to end: a real uvicorn process on a free loopback port, serving the shipped weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import image_bytes

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "weights"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, weights: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: an unread pipe fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the server
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "DETECTOR_WEIGHTS": str(weights), "DETECTOR_DEVICE": "cpu", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("uvicorn did not become ready")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        return self.output()


@pytest.fixture
def server() -> Iterator[Server]:
    instance = Server(SHIPPED)
    try:
        instance.wait_ready()
        yield instance
    finally:
        instance.stop()


def test_shipped_weights_serve_a_real_jpeg(server: Server):
    card = json.loads((SHIPPED / "model.json").read_text())
    response = httpx.post(
        f"{server.url}/detect", files={"image": ("made.jpg", image_bytes(500, 375), "image/jpeg")}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == card["sha256"][:12]
    (result,) = body["results"]
    assert (result["filename"], result["width"], result["height"]) == ("made.jpg", 500, 375)
    for detection in result["detections"]:
        assert 0 <= detection["box"]["x_min"] < detection["box"]["x_max"] <= 500
    assert httpx.get(f"{server.url}/model").json()["classes"] == card["classes"]
    assert "detector_images_total 1.0" in httpx.get(f"{server.url}/metrics").text


def test_sigterm_drains_in_flight_requests_and_exits_zero(server: Server):
    data = image_bytes(320, 240)
    result: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield data[:1000]
        time.sleep(1.5)  # the request is in flight while SIGTERM arrives
        yield data[1000:]

    def send() -> None:
        result["response"] = httpx.post(
            f"{server.url}/detect", content=slow_body(), headers={"Content-Type": "image/jpeg"}, timeout=30
        )

    client = threading.Thread(target=send)
    client.start()
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    readiness = httpx.get(f"{server.url}/readyz", timeout=5)
    assert readiness.status_code == 503 and readiness.json()["status"] == "draining"
    refused = httpx.post(
        f"{server.url}/detect", content=data, headers={"Content-Type": "image/jpeg"}, timeout=5
    )
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    client.join(30)
    assert result["response"].status_code == 200, result["response"].text
    assert result["response"].json()["results"][0]["width"] == 320
    assert server.process.wait(timeout=30) == 0
    assert "draining" in server.stop()

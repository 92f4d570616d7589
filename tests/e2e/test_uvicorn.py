"""End to end: a real uvicorn process on a free loopback port, serving the shipped weights."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import image_bytes
from tests.serving import ROOT, Server, slow_body

SHIPPED = ROOT / "weights"


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(SHIPPED) as instance:
        yield instance


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

    def send() -> None:
        result["response"] = httpx.post(
            f"{server.url}/detect",
            content=slow_body(data, 1000, 1.5),  # in flight while SIGTERM arrives
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
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

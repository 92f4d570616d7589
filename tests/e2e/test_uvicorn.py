"""End to end: a real uvicorn process on a free loopback port, serving the shipped weights."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from app.imaging.decoding import decode_image_bytes
from model.config import DetectParams
from model.predictor import Predictor
from tests.support.images import chw, image_bytes
from tests.support.serving import ROOT, Server, SlowUpload

pytestmark = pytest.mark.slow  # real servers or training runs: not in make test-fast

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


def test_served_backend_gives_what_was_measured(server: Server):
    """The service's default CPU backend answers what the same backend gives in process, the way
    ``python -m model.evaluate --backend`` measured it (what is served is what was measured)."""
    card = httpx.get(f"{server.url}/model").json()
    backend = card["backend"]
    assert backend == Predictor.from_weights(SHIPPED, "cpu", backend="auto")[0].backend
    assert (
        card["precision"]
        == {"onnxruntime": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[backend]
    )
    data = image_bytes(500, 375)
    query = {"score_threshold": 0.0002, "max_detections": 1000}  # a confident model: go low
    response = httpx.post(
        f"{server.url}/detect", params=query, files={"image": ("a.jpg", data, "image/jpeg")}, timeout=30
    )
    served = response.json()["results"][0]["detections"]
    predictor, _ = Predictor.from_weights(SHIPPED, "cpu", backend=backend)
    pixels = chw(decode_image_bytes(data, 10**8).pixels)
    expected = predictor(pixels, DetectParams(score_threshold=0.0002, max_detections=1000))[0]
    assert len(served) == len(expected.scores) > 5
    # Matched by class and box, not by rank: near-equal scores may swap places.
    remaining = list(
        zip(expected.labels.tolist(), expected.boxes_xyxy.tolist(), expected.scores.tolist(), strict=True)
    )
    for got in served:
        corners = [got["box"][k] for k in ("x_min", "y_min", "x_max", "y_max")]
        label, box, score = min(
            remaining,
            key=lambda e: (
                e[0] != got["class_id"],
                max(abs(a - b) for a, b in zip(e[1], corners, strict=True)),
            ),
        )
        remaining.remove((label, box, score))
        assert label == got["class_id"]
        assert corners == pytest.approx(box, abs=0.05)
        assert got["score"] == pytest.approx(score, abs=1e-4)


def test_sigterm_drains_in_flight_requests_and_exits_zero(server: Server):
    data = image_bytes(320, 240)
    client = SlowUpload(f"{server.url}/detect", data, 1000, 1.5, timeout=30)  # in flight at SIGTERM
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
    assert client.response is not None and client.response.status_code == 200, client.response
    assert client.response.json()["results"][0]["width"] == 320
    assert server.process.wait(timeout=30) == 0
    assert "draining" in server.stop()

"""The service with torch out of reach, as in the CPU image: a real uvicorn process whose
interpreter cannot import torch (tests/support/no_torch), serving through the numpy runtime, with
the answers of the same predictor run here."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from model.arrays.predictor import ArrayPredictor
from model.config import DetectParams
from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import add_ir, make_weights

NO_TORCH = str(Path(__file__).resolve().parents[2] / "support" / "no_torch")
ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def without_torch(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([NO_TORCH, str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_the_blocker_hides_torch():
    done = without_torch("import torch")
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


@pytest.fixture(scope="module")
def ir_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_ir(make_weights(tmp_path_factory.mktemp("ir"), objectness_bias=6.0))


def test_the_service_serves_without_torch_as_the_numpy_runtime_predicts(ir_weights):
    env = {"PYTHONPATH": os.pathsep.join([NO_TORCH, str(ROOT)])}
    data = image_bytes(200, 150)
    with Server(ir_weights, **env) as server:
        card = httpx.get(f"{server.url}/model", timeout=10).json()
        assert (card["runtime"], card["backend"], card["device"]) == ("numpy", "openvino-int8", "cpu")
        query = {"score_threshold": 0.05}
        answer = httpx.post(
            f"{server.url}/detect", params=query, files={"image": ("a.jpg", data)}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        served = answer.json()["results"][0]["detections"]
        drawn = httpx.post(
            f"{server.url}/detect", params={"format": "png"}, files={"image": ("a.jpg", data)}, timeout=30
        )
        assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size == (200, 150)
        bad = httpx.post(f"{server.url}/detect", files={"image": ("a.jpg", b"not an image")}, timeout=30)
        assert bad.status_code == 400
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "libc10" not in maps
    predictor, _ = ArrayPredictor.from_weights(ir_weights)
    pixels = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    (expected,) = predictor([predictor.fit(pixels)], DetectParams(0.05, 0.45, 100))
    assert len(served) == len(expected) > 0
    for got, box, label in zip(served, expected.boxes_xyxy.tolist(), expected.labels.tolist(), strict=True):
        assert got["class_id"] == label
        corners = [got["box"][k] for k in ("x_min", "y_min", "x_max", "y_max")]
        assert np.abs(np.array(corners) - np.array(box)).max() < 0.02


def test_a_torch_only_setting_fails_readiness_with_the_reason(ir_weights):
    env = {"PYTHONPATH": os.pathsep.join([NO_TORCH, str(ROOT)]), "DETECTOR_BACKEND": "onnxruntime"}
    server = Server(ir_weights, **env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{server.url}/readyz", timeout=1)
                if answer.json().get("status") == "failed":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert answer.status_code == 503
        assert "numpy runtime serves" in answer.text and "DETECTOR_RUNTIME=torch" in answer.text
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # alive, not ready
    finally:
        server.stop()

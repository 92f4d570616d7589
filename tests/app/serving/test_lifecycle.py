"""Readiness transitions, the model card, metrics, overload and failing batches."""

import json
import shutil
import threading
from pathlib import Path

import pytest

from tests.support.app_client import make_client, wait_ready
from tests.support.images import image_bytes


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_loading_then_ready(weights_dir, monkeypatch):
    import model.predictor

    release = threading.Event()
    original = model.predictor.Predictor.from_weights

    def slow_load(*args, **kwargs):
        release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(model.predictor.Predictor, "from_weights", slow_load)
    with make_client(weights_dir) as client:
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert loading.headers["Retry-After"]
        assert client.get("/healthz").status_code == 200
        busy = client.post("/detect", files={"image": ("a.jpg", image_bytes())})
        assert busy.status_code == 503 and "loading" in busy.json()["detail"] and busy.headers["Retry-After"]
        release.set()
        wait_ready(client)
        assert client.get("/readyz").status_code == 200


def broken_copy(weights_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    shutil.copytree(weights_dir, folder)
    return folder


def check_failed(folder: Path, *fragments: str) -> None:
    with make_client(folder) as client:
        wait_ready(client)
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "failed"
        for fragment in fragments:
            assert fragment in body["reason"]
        assert str(folder) not in body["reason"] and "$DETECTOR_WEIGHTS/" in body["reason"]
        assert client.get("/healthz").status_code == 200
        detect = client.post("/detect", files={"image": ("a.jpg", image_bytes())})
        assert detect.status_code == 503 and "failed" in detect.json()["detail"]
        assert client.get("/model").status_code == 503


def test_missing_weights_fail_readiness(tmp_path):
    check_failed(tmp_path / "nowhere", "model.json", "missing")


def test_tampered_weights_fail_readiness(weights_dir, tmp_path):
    folder = broken_copy(weights_dir, tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    check_failed(folder, "model.safetensors", "sha256")


def test_truncated_weights_fail_readiness(weights_dir, tmp_path):
    folder = broken_copy(weights_dir, tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:5000])
    check_failed(folder, "model.safetensors", "sha256")


def test_a_class_list_that_does_not_fit_the_tensors_fails_readiness(weights_dir, tmp_path):
    """Any class list loads (the service follows the card), but it must fit the head's channels."""
    folder = broken_copy(weights_dir, tmp_path)
    card = folder / "model.json"
    meta = json.loads(card.read_text())
    meta["classes"] = meta["classes"][:3]
    card.write_text(json.dumps(meta))
    check_failed(folder, "model.safetensors", "do not fit the architecture")


def test_model_card(client, weights_dir):
    card = client.get("/model").json()
    meta = json.loads((weights_dir / "model.json").read_text())
    assert card["name"] == "resnet18-grid"
    assert card["version"] == meta["sha256"][:12] and card["sha256"] == meta["sha256"]
    assert card["classes"] == meta["classes"] and len(card["classes"]) == 20
    assert card["input_size"] == meta["input_size"]
    assert card["device"] == "cpu" and card["dtype"] == "float32" and card["backend"] == "eager"
    assert card["default_thresholds"] == {
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "max_detections": 100,
    }
    assert card["training"] == meta["card"]


def test_metrics_count_requests_images_and_detections(client):
    client.post("/detect", files=[("image", ("a.jpg", image_bytes())), ("image", ("b.jpg", image_bytes()))])
    client.post("/detect", files={"image": ("bad.jpg", b"nonsense")})
    text = client.get("/metrics").text
    assert 'detector_requests_total{route="/detect",status="200"} 1.0' in text
    assert 'detector_requests_total{route="/detect",status="400"} 1.0' in text
    assert "detector_images_total 2.0" in text
    assert 'detector_detections_total{class_name="person"}' in text
    assert 'detector_decode_failures_total{status="400"} 1.0' in text
    assert "detector_batch_size_count" in text and "detector_queue_depth" in text
    assert "detector_inference_seconds_count" in text and "detector_request_seconds_bucket" in text


def test_metrics_name_the_model_and_the_process(client):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    (info,) = families["detector_model_info"].samples
    card = client.get("/model").json()
    assert info.value == 1 and info.labels["version"] == card["version"]
    assert info.labels["backend"] == card["backend"] and info.labels["input_size"] == str(card["input_size"])
    assert families["process_resident_memory_bytes"].samples[0].value > 10 * 2**20
    assert "process_cpu_seconds" in families and "process_open_fds" in families


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool here (apt-get install prometheus)")
def test_promtool_finds_nothing_to_fix(client):
    import subprocess

    client.post("/detect", files={"image": ("a.jpg", image_bytes())})
    text = client.get("/metrics").text
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_overload_is_a_fast_503_with_retry_after(weights_dir):
    with make_client(weights_dir, max_queue_images=2) as client:
        wait_ready(client)
        files = [("image", (f"{k}.jpg", image_bytes())) for k in range(3)]
        response = client.post("/detect", files=files)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "overloaded" in response.json()["detail"]
        assert client.post("/detect", files=files[:2]).status_code == 200
        assert "detector_overload_rejections_total 1.0" in client.get("/metrics").text


def test_a_failing_batch_fails_only_its_requests(client):
    service = client.app.state.service
    original = service.batcher.predictor
    calls = {"n": 0}

    def flaky(images, params):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(images, params)

    service.batcher.predictor = flaky
    try:
        failed = client.post("/detect", files={"image": ("a.jpg", image_bytes())})
        assert failed.status_code == 503 and failed.headers["Retry-After"]
        assert "CUDA" not in failed.text and "Traceback" not in failed.text
        assert client.post("/detect", files={"image": ("a.jpg", image_bytes())}).status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        service.batcher.predictor = original

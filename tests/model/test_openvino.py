"""The OpenVINO CPU backends: fp32 equal to eager, bf16 close on real-looking images, and ``auto``
picking bf16 only where the CPU runs it natively."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_iou

pytest.importorskip("openvino")

from app.imaging.decoding import decode_image_bytes
from model import hardware
from model.checkpoint import WeightsError, load_weights
from model.config import DetectParams
from model.predictor import Predictor
from model.quantize import main as quantize_main
from tests.support.attacks import photo_like
from tests.support.images import chw
from tests.support.serving import ROOT
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow  # real servers or training runs: not in make test-fast

LOW = DetectParams(score_threshold=0.01, iou_threshold=0.45, max_detections=100)


def test_openvino_fp32_equals_eager(tiny_network):
    eager = Predictor(tiny_network, backend="eager")
    compiled = Predictor(tiny_network, backend="openvino")
    batch = torch.randn(3, 3, 64, 64)
    assert torch.allclose(compiled.forward(batch), eager.forward(batch), atol=1e-4)
    assert compiled.precision == "fp32"


def photos() -> list[torch.Tensor]:
    sizes = [(640, 480), (500, 375), (375, 500), (800, 600), (500, 500), (333, 500)]
    return [chw(decode_image_bytes(photo_like(w, h, seed=s), 10**8).pixels) for s, (w, h) in enumerate(sizes)]


@pytest.mark.parametrize(
    ("backend", "needs", "tolerance"),
    [
        ("openvino-bf16", hardware.cpu_has_bf16, 0.02),
        ("openvino-int8", hardware.cpu_has_int8_dot, 0.05),
    ],
)
def test_reduced_precision_answers_close_to_fp32_on_photos(backend, needs, tolerance):
    """The shipped network on textured photos, boxes kept down to 0.01: every fp32 detection over
    0.03 has a twin (same class, IoU >= 0.5, score within the tolerance: measured at most 0.011
    for bf16 and 0.035 for int8 on 6 VOC photos, 0.047 for int8 on one street photo), and the
    counts agree within a few."""
    if not needs():
        pytest.skip(f"this CPU has no native instructions for {backend}")
    fp32 = Predictor(load_weights(ROOT / "weights").network, backend="eager")
    # Raw scores on both sides: the card's calibration is one monotone map over either.
    reduced, _ = Predictor.from_weights(ROOT / "weights", "cpu", backend=backend, calibrated=False)
    assert reduced.precision == backend.removeprefix("openvino-")
    images = photos()
    checked = 0
    for want, got in zip(fp32(images, LOW), reduced(images, LOW), strict=True):
        assert abs(len(want.scores) - len(got.scores)) <= max(2, len(want.scores) // 5)
        for k in range(len(want.scores)):
            if want.scores[k] < 0.03:
                continue
            checked += 1
            iou = box_iou(want.boxes_xyxy[k : k + 1], got.boxes_xyxy)[0]
            twin = (got.labels == want.labels[k]) & (iou >= 0.5)
            assert twin.any(), (k, want.scores[k])
            assert (got.scores[twin] - want.scores[k]).abs().min() <= tolerance
    assert checked >= 5


def test_auto_picks_what_the_cpu_and_the_weights_allow(monkeypatch):
    def served(int8: bool, bf16: bool) -> str:
        monkeypatch.setattr(hardware, "cpu_has_int8_dot", lambda: int8)
        monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16)
        return Predictor.from_weights(ROOT / "weights", "cpu", backend="auto")[0].backend

    assert served(int8=True, bf16=True) == "openvino-int8"
    assert served(int8=True, bf16=False) == "openvino-int8"
    assert served(int8=False, bf16=True) == "openvino-bf16"
    assert served(int8=False, bf16=False) == "onnxruntime"


def test_auto_without_an_int8_network_never_picks_int8(tiny_network, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_int8_dot", lambda: True)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert Predictor(tiny_network, backend="auto").backend == "onnxruntime"
    with pytest.raises(ValueError, match=r"python -m model\.quantize"):
        Predictor(tiny_network, backend="openvino-int8")


@pytest.mark.slow
def test_quantize_writes_an_int8_network_the_loader_checks(tmp_path, voc_root):
    pytest.importorskip("nncf")
    folder = make_weights(tmp_path / "w")
    assert quantize_main(["--weights", str(folder), "--data", str(voc_root), "--images", "8"]) == 0
    block = json.loads((folder / "model.json").read_text())["int8"]
    assert block["calibration"]["images"] == 8 and block["source_sha256"] == load_weights(folder).sha256
    predictor, _ = Predictor.from_weights(folder, "cpu", backend="openvino-int8")
    assert predictor.precision == "int8"
    eager = Predictor(load_weights(folder).network, backend="eager")
    batch = torch.randn(2, 3, 64, 64)
    assert predictor.forward(batch).shape == eager.forward(batch).shape
    # A changed int8 file is refused when asked for, and skipped (with a warning) by auto.
    data = bytearray((folder / "model.int8.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.int8.bin").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        Predictor.from_weights(folder, "cpu", backend="openvino-int8")
    assert Predictor.from_weights(folder, "cpu", backend="auto")[0].backend != "openvino-int8"


def test_cuda_is_not_offered_the_cpu_runtimes(tiny_network):
    with pytest.raises(ValueError, match="float32 on CPU"):
        Predictor(tiny_network, dtype=torch.float16, backend="openvino-bf16")

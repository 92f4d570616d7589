"""The CUDA path (fp16, channels_last, letterbox on the device) agrees with the CPU path.

Skipped, with its reason, where there is no GPU."""

import pytest
import torch

from model.config import DetectParams
from model.predictor import Predictor, resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

LOW = DetectParams(score_threshold=0.05, iou_threshold=0.5, max_detections=50)


def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_cuda_fp16_matches_cpu_fp32(tiny_network):
    with torch.no_grad():
        tiny_network.head[-1].bias[4] = 3.0
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((50, 80), (90, 30))]
    cpu = Predictor(tiny_network, "cpu", backend="eager")
    raw_cpu = cpu.forward(cpu.preprocess(images)[0])
    gpu = Predictor(tiny_network, "cuda")
    assert gpu.dtype == torch.float16
    raw_gpu = gpu.forward(gpu.preprocess(images)[0]).float().cpu()
    torch.testing.assert_close(raw_gpu, raw_cpu, atol=5e-2, rtol=5e-2)
    for found in gpu(images, LOW):
        assert found.boxes_xyxy.device.type == "cpu"


def test_fitted_images_in_one_pinned_copy_answer_as_on_the_cpu(tiny_network):
    from model.arrays.fitting import fit_array
    from model.geometry import Fitted

    with torch.no_grad():
        tiny_network.head[-1].bias[4] = 3.0
    cpu = Predictor(tiny_network, "cpu", backend="eager")
    gpu = Predictor(tiny_network, "cuda")
    pixels = [
        torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy() for h, w in ((50, 80), (90, 30), (64, 64))
    ]
    fitted = [fit_array(p, 1, cpu.config.input_size) for p in pixels]
    fitted = [Fitted(torch.from_numpy(f.pixels.copy()).permute(2, 0, 1), f.width, f.height) for f in fitted]
    expected = cpu.preprocess(fitted)[0]
    for _ in range(2):  # the second batch reuses the staging buffer
        batch = gpu.preprocess(fitted)[0].float().cpu()
        torch.testing.assert_close(batch, expected, atol=1e-2, rtol=0)  # fp16 on the GPU
    for mine, theirs in zip(gpu(fitted, LOW), cpu(fitted, LOW), strict=True):
        assert abs(len(mine) - len(theirs)) <= 2

import math

import pytest
import torch
from torch.testing import assert_close

from model.config import DetectParams
from model.letterbox import letterbox_batch, letterbox_geometry
from model.predictor import Predictor
from tests.support.weights import make_weights

LOW = DetectParams(score_threshold=0.0, iou_threshold=0.5, max_detections=50)


def random_images(sizes):
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]


@pytest.fixture
def predictor(tiny_network):
    with torch.no_grad():
        tiny_network.head[-1].bias[4] = 3.0  # high objectness: every image has detections
    return Predictor(tiny_network, "cpu")


def test_letterbox_round_trip_and_placement():
    h, w, box = letterbox_geometry(375, 500, 416)
    assert (h, w) == (312, 416) and box.pad_x == 0 and box.pad_y == 52
    original = torch.tensor([[10.0, 20.0, 300.0, 370.0]])
    assert_close(box.to_original(box.to_input(original)), original)


def test_letterbox_fills_the_border_with_the_mean():
    image = torch.full((3, 10, 40), 255, dtype=torch.uint8)
    batch, (box,) = letterbox_batch([image], 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    assert batch.shape == (1, 3, 64, 64)
    assert box.pad_y == 24
    assert (batch[0, :, :24] == 0).all() and (batch[0, :, 40:] == 0).all()
    assert_close(batch[0, :, 30, 30], torch.full((3,), 2.0))


def test_batch_equals_single_images(predictor):
    images = random_images([(50, 80), (90, 30), (64, 64)])
    batched = predictor(images, LOW)
    for image, together in zip(images, batched, strict=True):
        alone = predictor(image, LOW)[0]
        assert_close(together.boxes_xyxy, alone.boxes_xyxy, atol=1e-3, rtol=1e-4)
        assert_close(together.scores, alone.scores, atol=1e-5, rtol=1e-4)
        assert torch.equal(together.labels, alone.labels)


def test_detections_respect_the_contract(predictor):
    (height, width) = (70, 130)
    found = predictor(random_images([(height, width)]), LOW)[0]
    assert len(found) > 0
    boxes = found.boxes_xyxy
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert (found.scores[:-1] >= found.scores[1:]).all()
    assert ((found.scores >= 0) & (found.scores <= 1)).all()


def test_thresholds_class_filter_and_cap(predictor):
    image = random_images([(80, 80)])
    everything = predictor(image, LOW)[0]
    capped = predictor(image, DetectParams(0.0, 0.5, 2))[0]
    assert len(capped) == min(2, len(everything))
    cut = float(everything.scores.median())
    above = predictor(image, DetectParams(cut, 0.5, 50))[0]
    assert (above.scores >= cut).all() and len(above) < len(everything)
    only = predictor(image, DetectParams(0.0, 0.5, 50, frozenset({3, 7})))[0]
    assert set(only.labels.tolist()) <= {3, 7} and len(only) > 0


def test_one_crafted_cell_decodes_to_exact_original_pixels(predictor, monkeypatch):
    # A 2x2 grid (input 64, stride 32); only cell (i=1, j=0) is confident, class 11.
    raw = torch.full((1, 25, 2, 2), -20.0)
    raw[0, :4] = 0.0
    tx, ty, tw, th = 0.2, -0.1, math.log(0.5), math.log(0.75)
    raw[0, 0:4, 0, 1] = torch.tensor([tx, ty, tw, th])
    raw[0, 4, 0, 1] = 5.0
    raw[0, 5 + 11, 0, 1] = 8.0
    monkeypatch.setattr(predictor, "forward", lambda batch: raw)
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)  # letterboxed to 32x64 with pad_y 16
    found = predictor(image, DetectParams(0.5, 0.5, 10))[0]
    assert found.labels.tolist() == [11]
    xc, yc = 32 * (math.tanh(tx) + 1.5), 32 * (math.tanh(ty) + 0.5)
    w, h = 32 * 0.5, 32 * 0.75
    scale = 64 / 200
    expected = torch.tensor([xc - w / 2, yc - h / 2 - 16, xc + w / 2, yc + h / 2 - 16]) / scale
    expected = torch.minimum(expected.clamp(min=0), torch.tensor([200.0, 100.0, 200.0, 100.0]))
    assert_close(found.boxes_xyxy[0], expected, atol=1e-3, rtol=0)
    score = torch.sigmoid(torch.tensor(5.0)) * torch.softmax(raw[0, 5:, 0, 1], 0)[11]
    assert_close(found.scores[0], score)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jit", "onnxruntime", "openvino"])
def test_cpu_backends_give_the_eager_outputs(tiny_network, backend):
    eager = Predictor(tiny_network, "cpu", backend="eager")
    fast = Predictor(tiny_network, "cpu", backend=backend)
    assert fast.backend == backend
    for size in (1, 3, 1, 16):  # a new batch size, then back, then the service's largest
        batch = torch.randn(size, 3, 64, 64)
        torch.testing.assert_close(fast.forward(batch), eager.forward(batch), atol=1e-4, rtol=1e-4)
    images = random_images([(50, 70), (64, 64), (300, 20)])
    for a, b in zip(fast(images, LOW), eager(images, LOW), strict=True):
        assert torch.equal(a.labels, b.labels)
        assert_close(a.boxes_xyxy, b.boxes_xyxy, atol=1e-2, rtol=1e-4)
        assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-4)


def test_cpu_runtimes_are_refused_off_fp32(tiny_network):
    with pytest.raises(ValueError, match="onnxruntime backend takes float32 on CPU"):
        Predictor(tiny_network, "cpu", dtype=torch.bfloat16, backend="onnxruntime")


def test_empty_list_gives_no_results(predictor):
    assert predictor([], LOW) == []


def test_the_null_backend_has_the_networks_shapes_and_finds_nothing(tmp_path):
    from model.backends import BACKENDS, auto_cpu_backend

    folder = make_weights(tmp_path, objectness_bias=6.0)  # the real network boxes everything
    eager, _ = Predictor.from_weights(folder, "cpu", backend="eager")
    null, _ = Predictor.from_weights(folder, "cpu", backend="null")
    batch, _ = eager.preprocess([torch.zeros(3, 50, 70, dtype=torch.uint8)] * 3)
    assert null.forward(batch).shape == eager.forward(batch).shape
    images = [torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8) for _ in range(2)]
    assert all(len(found) > 0 for found in eager(images, DetectParams(score_threshold=0.01)))
    assert all(len(found) == 0 for found in null(images, DetectParams(score_threshold=0.01)))
    assert null.precision == "none" and "null" in BACKENDS
    assert auto_cpu_backend(True) != "null" and auto_cpu_backend(False) != "null"

"""The stride-8 level: the cell layout of two levels, each level's decoding at its own stride, the
levels merged before the one NMS on both runtimes, objects assigned to a level by size, the card,
``--init-from`` a one-level model, and a training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.arrays.postprocess import decode_grid
from model.arrays.postprocess import postprocess as numpy_postprocess
from model.boxes import assign_levels, decode_boxes, pad_boxes, split_grid
from model.checkpoint import load_weights
from model.config import LEVEL_SPLIT, DetectorConfig, DetectParams
from model.geometry import letterbox_geometry
from model.grid import layout_of
from model.loss import detection_loss
from model.network import build_network
from model.postprocess import postprocess
from model.training.setup import transfer_weights
from tests.support.weights import make_weights

TWO_LEVELS = DetectorConfig(input_size=128, neck_channels=32, stride8_level=True)


def test_two_levels_give_one_flat_output_finest_first():
    torch.manual_seed(0)
    network = build_network(TWO_LEVELS).eval()
    with torch.no_grad():
        raw = network(torch.randn(2, 3, 128, 128))
    assert TWO_LEVELS.strides == (8, 16)
    assert raw.shape == (2, 5 + 20, 16 * 16 + 8 * 8)
    layout = layout_of(raw.shape, TWO_LEVELS.strides)
    assert layout.sides == (16, 8) and layout.input_size == 128
    # Another input side reads as another layout of the same levels.
    assert layout_of((1, 25, 40 * 40 + 20 * 20), (8, 16)).input_size == 320


def test_a_layout_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="square grids"):
        layout_of((1, 25, 300), (8, 16))
    with pytest.raises(ValueError, match="one level"):
        layout_of((1, 25, 4, 4), (8, 16))
    with pytest.raises(ValueError, match="builds on"):
        DetectorConfig(stride8_level=True)  # no neck


def test_each_level_decodes_at_its_own_stride_on_both_runtimes():
    raw = torch.zeros(1, 5 + 2, 4 * 4 + 2 * 2)  # a 32-pixel input: 4x4 cells at 8, 2x2 at 16
    out = split_grid(raw, (8, 16))
    # tx = ty = tw = th = 0: a box of one stride centred in its cell.
    torch.testing.assert_close(out.boxes_xyxy[0, 1 * 4 + 2], torch.tensor([16.0, 8.0, 24.0, 16.0]))
    torch.testing.assert_close(out.boxes_xyxy[0, 16 + 1 * 2 + 1], torch.tensor([16.0, 16.0, 32.0, 32.0]))
    boxes, _ = decode_grid(raw.numpy(), (8, 16))
    np.testing.assert_allclose(boxes, out.boxes_xyxy.numpy(), atol=1e-5)


def test_objects_train_one_level_by_size_and_decode_back():
    layout = layout_of((1, 25, 16 * 16 + 8 * 8), (8, 16))
    small = torch.tensor([20.0, 30.0, 40.0, 50.0])  # sqrt(area) 20 < LEVEL_SPLIT
    large = torch.tensor([10.0, 10.0, 110.0, 100.0])  # 95
    boxes, labels = pad_boxes([torch.stack([small, large])], [torch.tensor([3, 7])])
    targets = assign_levels(boxes, labels, layout, LEVEL_SPLIT)
    fine, coarse = layout.slices()
    assert set(targets.labels[0, fine][targets.positive[0, fine]].tolist()) == {3}
    assert set(targets.labels[0, coarse][targets.positive[0, coarse]].tolist()) == {7}
    centres = torch.from_numpy(layout.centres().copy())
    strides = torch.from_numpy(layout.cell_strides())
    cells = targets.positive[0].nonzero().flatten()
    decoded = decode_boxes(targets.deltas[0, cells], centres[cells], strides[cells])
    expected = torch.stack([small if int(label) == 3 else large for label in targets.labels[0, cells]])
    torch.testing.assert_close(decoded, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("params", [DetectParams(0.1, 0.45, 100), DetectParams(0.0, 0.5, 1000)])
def test_both_levels_merge_before_one_nms_equally_on_both_runtimes(params):
    generator = torch.Generator().manual_seed(3)
    raw = torch.randn(2, 5 + 6, 24 * 24 + 12 * 12, generator=generator) * 2
    raw[:, 4] += 1.5
    placements = [letterbox_geometry(300, 400, 192)[2], letterbox_geometry(500, 200, 192)[2]]
    theirs = postprocess(split_grid(raw, (8, 16)), placements, [params] * 2)
    mine = numpy_postprocess(raw.numpy(), (8, 16), placements, [params] * 2)
    for a, b in zip(mine, theirs, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.labels, b.labels.numpy())
        np.testing.assert_allclose(a.scores, b.scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy.numpy(), atol=1e-3)
    # One NMS over both levels: a stride-8 cell and a stride-16 cell finding the same box give one.
    twin = torch.zeros(1, 5 + 2, 4 * 4 + 2 * 2)  # a 32-pixel input
    twin[0, 4] = -10.0
    twin[0, 5] = 5.0  # class 0
    twin[0, 4, 16] = 10.0  # coarse cell (0, 0), zero offsets: the box 0..16
    twin[0, 4, 0] = 10.0  # fine cell (0, 0): centre 8 * (tanh(t) + 0.5) = 8, side 8 * exp(t) = 16
    twin[0, :4, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0]).atanh() + torch.tensor([0.0, 0.0, 0.6931, 0.6931])
    square = [letterbox_geometry(32, 32, 32)[2]]
    only = [DetectParams(0.5, 0.45, 100)]
    (merged,) = postprocess(split_grid(twin, (8, 16)), square, only)
    (merged_numpy,) = numpy_postprocess(twin.numpy(), (8, 16), square, only)
    assert len(merged) == len(merged_numpy) == 1
    torch.testing.assert_close(merged.boxes_xyxy[0], torch.tensor([0.0, 0.0, 16.0, 16.0]), atol=1e-3, rtol=0)


def mirror_levels(raw: torch.Tensor, sides: tuple[int, ...]) -> torch.Tensor:
    """A perfectly mirror-equivariant network's output for the mirror image: each level's grid
    flipped left to right, ``tx`` negated."""
    parts, start = [], 0
    for side in sides:
        level = raw[:, :, start : start + side * side].reshape(*raw.shape[:2], side, side).flip(-1)
        parts.append(level.flatten(2))
        start += side * side
    mirrored = torch.cat(parts, dim=2).clone()
    mirrored[:, 0] = -mirrored[:, 0]
    return mirrored


def test_flip_merging_mirrors_within_each_level():
    raw = torch.randn(2, 5 + 4, 12 * 12 + 6 * 6, generator=torch.Generator().manual_seed(5))
    raw[:, 4] += 2
    placements = [letterbox_geometry(70, 96, 96)[2], letterbox_geometry(96, 50, 96)[2]]
    plain = [DetectParams(0.05, 0.5, 100)] * 2
    flipped = [DetectParams(0.05, 0.5, 100, flip=True), DetectParams(0.05, 0.5, 100)]
    with_mirror = torch.cat([raw, mirror_levels(raw[:1], (12, 6))])
    expected = postprocess(split_grid(raw, (8, 16)), placements, plain)
    merged = postprocess(split_grid(with_mirror, (8, 16)), placements, flipped)
    merged_numpy = numpy_postprocess(with_mirror.numpy(), (8, 16), placements, flipped)
    for a, b, c in zip(expected, merged, merged_numpy, strict=True):
        assert len(a) > 0
        torch.testing.assert_close(b.boxes_xyxy, a.boxes_xyxy, atol=1e-4, rtol=0)
        torch.testing.assert_close(b.scores, a.scores, atol=1e-6, rtol=0)
        np.testing.assert_allclose(c.boxes_xyxy, a.boxes_xyxy.numpy(), atol=1e-3)


def test_the_card_records_the_levels_and_loads_them_back(tmp_path: Path):
    folder = make_weights(tmp_path / "w", input_size=64, neck_channels=32, stride8_level=True)
    loaded = load_weights(folder)
    assert loaded.config.strides == (8, 16) and loaded.config.level_split == LEVEL_SPLIT
    assert loaded.card["architecture"]["levels"] == [8, 16]
    torch.manual_seed(0)
    again = build_network(loaded.config)
    again.load_state_dict(loaded.network.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(images), loaded.network.eval()(images))
    one_level = load_weights(make_weights(tmp_path / "one", input_size=64, neck_channels=32))
    assert one_level.config.strides == (16,) and one_level.card["architecture"]["levels"] == [16]


def test_init_from_a_one_level_model_starts_the_fine_head_as_its_head(tmp_path: Path):
    source = load_weights(make_weights(tmp_path / "w", input_size=64, neck_channels=32, objectness_bias=3.0))
    torch.manual_seed(1)
    target = build_network(DetectorConfig(input_size=64, neck_channels=32, stride8_level=True))
    report = transfer_weights(source.network, target)
    assert target.fine_head is not None
    for mine, theirs in zip(
        target.fine_head.state_dict().values(), source.network.head.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(mine, theirs.to(mine.dtype), rtol=0, atol=0)
    assert any(key.startswith("fine.") for key in report["fresh"])
    assert not any(key.startswith(("backbone.", "neck.", "head.")) for key in report["fresh"])
    assert "fine_head started as a copy of head" in report["head"] and not report["unused"]
    # The stride-16 level answers exactly as the source did.
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        coarse = target.eval()(images)[:, :, 8 * 8 :]
        torch.testing.assert_close(coarse, source.network.eval()(images).flatten(2), atol=1e-5, rtol=0)


def test_a_training_step_trains_both_levels():
    torch.manual_seed(0)
    network = build_network(TWO_LEVELS).train()
    images = torch.randn(2, 3, 128, 128)
    boxes, labels = pad_boxes(
        [torch.tensor([[10.0, 10.0, 30.0, 34.0], [20.0, 16.0, 120.0, 110.0]]), torch.zeros(0, 4)],
        [torch.tensor([2, 9]), torch.zeros(0, dtype=torch.long)],
    )
    raw = network(images)
    layout = layout_of(raw.shape, TWO_LEVELS.strides)
    targets = assign_levels(boxes, labels, layout, TWO_LEVELS.level_split)
    terms = detection_loss(split_grid(raw, TWO_LEVELS.strides), targets)
    assert all(torch.isfinite(value) for value in terms.values())
    terms["total"].backward()
    assert network.fine is not None and network.fine_head is not None
    assert float(network.fine.fuse[0].weight.grad.abs().sum()) > 0
    assert float(network.fine_head[-1].weight.grad.abs().sum()) > 0
    assert float(network.head[-1].weight.grad.abs().sum()) > 0


@pytest.fixture(scope="module")
def two_level_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.weights import add_ir

    folder = make_weights(
        tmp_path_factory.mktemp("two"),
        input_size=64,
        objectness_bias=2.0,
        neck_channels=32,
        stride8_level=True,
    )
    return add_ir(folder)  # the exported network (one (B, 5 + C, N) output) as OpenVINO runs it


@pytest.mark.parametrize("input_size", [None, 96])
def test_two_level_weights_serve_alike_on_every_backend_and_runtime(two_level_weights: Path, input_size):
    from model.arrays.predictor import ArrayPredictor
    from model.predictor import Predictor
    from tests.support.attacks import photo_like

    image = torch.from_numpy(
        np.array(
            __import__("PIL.Image", fromlist=["Image"]).open(
                __import__("io").BytesIO(photo_like(120, 90, seed=4))
            )
        )
    ).permute(2, 0, 1)
    params = DetectParams(0.05, 0.45, 100)
    eager, _ = Predictor.from_weights(two_level_weights, "cpu", input_size=input_size)
    (expected,) = eager([image], params)
    assert len(expected) > 0
    for backend in ("jit", "onnxruntime", "openvino"):
        predictor, _ = Predictor.from_weights(
            two_level_weights, "cpu", backend=backend, input_size=input_size
        )
        (got,) = predictor([image], params)
        assert len(got) == len(expected), backend
        np.testing.assert_allclose(got.scores.numpy(), expected.scores.numpy(), atol=1e-4)
    numpy_predictor, _ = ArrayPredictor.from_weights(two_level_weights, input_size=input_size)
    (mine,) = numpy_predictor([image.permute(1, 2, 0).numpy()], params)
    assert len(mine) == len(expected)
    np.testing.assert_allclose(mine.boxes_xyxy, expected.boxes_xyxy.numpy(), atol=0.05)
    for runtime_null in (
        Predictor.from_weights(two_level_weights, "cpu", backend="null", input_size=input_size)[0],
        ArrayPredictor.from_weights(two_level_weights, backend="null", input_size=input_size)[0],
    ):
        assert (
            len(
                runtime_null(
                    [image.permute(1, 2, 0).numpy() if runtime_null.runtime == "numpy" else image], params
                )[0]
            )
            == 0
        )

"""The torch-free path (model.arrays) against the torch path: the same fit, batch, decoding,
scores, threshold, filter and NMS, so the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.arrays.fitting import fit_array, orient_array
from model.arrays.postprocess import decode_grid, nms, postprocess
from model.arrays.predictor import ArrayPredictor
from model.boxes import split_grid
from model.card import WeightsError, read_card
from model.config import DetectParams
from model.geometry import Fitted, letterbox_geometry
from model.letterbox import fit_stored, letterbox_batch
from model.postprocess import postprocess as torch_postprocess
from model.predictor import Predictor
from model.runtime import open_predictor
from tests.support.attacks import photo_like
from tests.support.weights import add_ir, make_weights

SHIPPED = Path(__file__).resolve().parents[2] / "weights"


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    import io

    from PIL import Image

    return np.array(Image.open(io.BytesIO(photo_like(width, height, seed=seed))).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_fit_is_torchvisions_resize_to_a_step_or_two_in_every_orientation(orientation):
    pixels = photo(500, 333, seed=orientation)
    mine = fit_array(pixels, orientation, 96)
    theirs = fit_stored(pixels, orientation, 96)
    assert (mine.width, mine.height) == (theirs.width, theirs.height)
    reference = theirs.pixels.permute(1, 2, 0).numpy()
    assert mine.pixels.shape == reference.shape
    difference = np.abs(mine.pixels.astype(int) - reference.astype(int))
    # Rounding apart (a transposed image is resized in the other order of passes), the same pixels.
    assert difference.max() <= 3 and difference.mean() < 0.25
    assert orient_array(pixels, orientation).shape[:2] == (mine.height, mine.width)


def test_an_over_long_axis_is_reduced_before_the_resize():
    pixels = np.full((2, 70_000, 3), 200, dtype=np.uint8)
    fitted = fit_array(pixels, 1, 64)
    assert fitted.pixels.shape == (1, 64, 3) and (fitted.width, fitted.height) == (70_000, 2)
    assert int(fitted.pixels.min()) == int(fitted.pixels.max()) == 200


def test_the_batch_equals_the_torch_batch(tiny_config):
    predictor = ArrayPredictor(tiny_config, None, backend="null")
    arrays = [fit_array(photo(w, h, seed=w), 1, tiny_config.input_size) for w, h in ((90, 60), (40, 70))]
    tensors = [Fitted(torch.from_numpy(f.pixels.copy()).permute(2, 0, 1), f.width, f.height) for f in arrays]
    batch, placements = predictor.preprocess(arrays)
    expected, expected_placements = letterbox_batch(
        tensors, tiny_config.input_size, tiny_config.mean, tiny_config.std, torch.device("cpu")
    )
    assert placements == expected_placements
    torch.testing.assert_close(torch.from_numpy(batch), expected, atol=1e-6, rtol=0)


PARAMS = [
    DetectParams(0.2, 0.45, 100),
    DetectParams(0.05, 0.3, 7),
    DetectParams(0.1, 0.6, 50, frozenset({0, 3})),
    DetectParams(0.0, 0.5, 1000),  # every cell: the pre-NMS top-k cut applies
    DetectParams(0.99, 0.5, 10),  # nothing
]


@pytest.mark.parametrize("params", PARAMS)
def test_post_processing_equals_the_torch_path(params):
    generator = torch.Generator().manual_seed(1)
    raw = torch.randn(2, 5 + 6, 12, 12, generator=generator) * 2
    raw[:, 4] += 1.5
    placements = [letterbox_geometry(300, 400, 192)[2], letterbox_geometry(500, 200, 192)[2]]
    mine = postprocess(raw.numpy(), 16, placements, [params] * 2)
    theirs = torch_postprocess(split_grid(raw, 16), placements, [params] * 2)
    for a, b in zip(mine, theirs, strict=True):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.labels, b.labels.numpy())
        np.testing.assert_allclose(a.scores, b.scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy.numpy(), atol=1e-3)


def test_decoded_boxes_follow_the_seed_rule():
    raw = np.zeros((1, 5 + 2, 2, 3), dtype=np.float32)  # tx = ty = tw = th = 0 everywhere
    boxes, scores = decode_grid(raw, 32)
    # cell (i=2, j=1): centre (2.5, 1.5) cells, size one stride
    np.testing.assert_allclose(boxes[0, 1 * 3 + 2], [64, 32, 96, 64])
    np.testing.assert_allclose(scores[0, 0], [0.25, 0.25])  # sigmoid(0) x softmax of two equal


def test_nms_keeps_the_best_of_overlapping_boxes_and_stops_at_the_limit():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.1], np.float32)
    assert nms(boxes, scores, 0.5, 10).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, 2).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95, 10).tolist() == [1, 2, 0, 3]


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_ir(make_weights(tmp_path_factory.mktemp("ir"), objectness_bias=6.0))


def test_the_numpy_runtime_answers_like_the_torch_runtime_on_the_same_network(tiny_ir):
    params = DetectParams(0.05, 0.45, 100)
    mine, weights = ArrayPredictor.from_weights(tiny_ir)
    theirs, loaded = Predictor.from_weights(tiny_ir, "cpu", backend="openvino")
    assert weights.version == loaded.version
    images = [photo(w, h, seed=k) for k, (w, h) in enumerate(((120, 90), (64, 64), (50, 200)))]
    for image in images:
        # the same fitted pixels on both sides: what is left to differ is the batch and the head
        fitted = mine.fit(image)
        as_tensor = Fitted(
            torch.from_numpy(fitted.pixels.copy()).permute(2, 0, 1), fitted.width, fitted.height
        )
        (a,), (b,) = mine([fitted], params), theirs([as_tensor], params)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.labels, b.labels.numpy())
        np.testing.assert_allclose(a.scores, b.scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy.numpy(), atol=0.05)


def test_on_the_cpu_both_runtimes_fit_the_same_pixels(tiny_network):
    torch_path = Predictor(tiny_network, "cpu")
    numpy_path = ArrayPredictor(tiny_network.config, None, backend="null")
    for orientation in (1, 6):
        pixels = photo(300, 200, seed=orientation)
        a, b = numpy_path.fit(pixels, orientation), torch_path.fit(pixels, orientation)
        assert (a.width, a.height) == (b.width, b.height)
        assert np.array_equal(a.pixels, b.pixels.permute(1, 2, 0).numpy())
    full = torch.from_numpy(photo(300, 200)).permute(2, 0, 1)
    batch, _ = torch_path.preprocess([full])  # a full image is fitted the same way
    expected, _ = numpy_path.preprocess([photo(300, 200)])
    torch.testing.assert_close(batch, torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_the_shipped_int8_network_sees_an_image_the_same_way_on_both_paths():
    """Each runtime's own fit (the same on the CPU), then the int8 network: the same grid.
    (On the 1,002 VOC val images: docs/model.md.)"""
    mine, _ = open_predictor(SHIPPED, "cpu", "openvino-int8", runtime="numpy")
    theirs, _ = open_predictor(SHIPPED, "cpu", "openvino-int8", runtime="torch")
    assert (mine.runtime, theirs.runtime) == ("numpy", "torch")
    stride = mine.config.stride
    for seed in range(3):
        image = photo(500, 375, seed=seed)
        batch, _ = mine.preprocess([mine.fit(image)])
        boxes, scores = decode_grid(mine.forward(batch), stride)
        tensor_batch, _ = theirs.preprocess([theirs.fit(image)])
        expected = split_grid(theirs.forward(tensor_batch), stride)
        expected_scores = torch.sigmoid(expected.objectness)[..., None] * torch.softmax(
            expected.class_logits, dim=-1
        )
        assert np.abs(scores - expected_scores.numpy()).max() < 1e-4
        assert np.abs(boxes - expected.boxes_xyxy.numpy()).max() < 0.01


def test_the_numpy_runtime_serves_only_the_int8_network_and_says_why(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="numpy runtime serves"):
        ArrayPredictor(tiny_config, None, backend="onnxruntime")
    bare = make_weights(tmp_path / "bare")
    with pytest.raises(WeightsError, match=r"model\.quantize"):
        ArrayPredictor.from_weights(bare)
    with pytest.raises(ValueError, match="needs torch"):
        open_predictor(bare, "cuda", runtime="numpy")


def test_the_card_is_checked_without_torch(tmp_path):
    folder = make_weights(tmp_path / "w")
    assert read_card(folder).version
    (folder / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(WeightsError, match="does not match"):
        read_card(folder)


def mirror_grid(raw: torch.Tensor) -> torch.Tensor:
    """What a perfectly mirror-equivariant network gives for the mirror image: the grid flipped
    left to right, with the horizontal offset ``tx`` negated."""
    mirrored = raw.flip(-1).clone()
    mirrored[:, 0] = -mirrored[:, 0]
    return mirrored


def test_flip_merging_undoes_the_mirror_on_both_runtimes():
    raw = torch.randn(2, 5 + 4, 6, 6, generator=torch.Generator().manual_seed(5))
    raw[:, 4] += 2
    placements = [letterbox_geometry(70, 96, 96)[2], letterbox_geometry(96, 50, 96)[2]]
    plain = [DetectParams(0.05, 0.5, 100)] * 2
    flipped = [DetectParams(0.05, 0.5, 100, flip=True), DetectParams(0.05, 0.5, 100)]
    with_mirror = torch.cat([raw, mirror_grid(raw[:1])])  # image 0 asked for flip
    expected = torch_postprocess(split_grid(raw, 16), placements, plain)
    merged = torch_postprocess(split_grid(with_mirror, 16), placements, flipped)
    merged_numpy = postprocess(with_mirror.numpy(), 16, placements, flipped)
    for a, b, c in zip(expected, merged, merged_numpy, strict=True):
        torch.testing.assert_close(b.boxes_xyxy, a.boxes_xyxy, atol=1e-4, rtol=0)
        torch.testing.assert_close(b.scores, a.scores, atol=1e-6, rtol=0)
        np.testing.assert_allclose(c.boxes_xyxy, a.boxes_xyxy.numpy(), atol=1e-3)
        np.testing.assert_array_equal(c.labels, a.labels.numpy())


def test_flip_answers_agree_between_the_runtimes(tiny_ir):
    params = DetectParams(0.05, 0.45, 100, flip=True)
    mine, _ = ArrayPredictor.from_weights(tiny_ir)
    theirs, _ = Predictor.from_weights(tiny_ir, "cpu", backend="openvino")
    fitted = mine.fit(photo(120, 90, seed=9))
    as_tensor = Fitted(torch.from_numpy(fitted.pixels.copy()).permute(2, 0, 1), fitted.width, fitted.height)
    (a,), (b,) = mine([fitted], params), theirs([as_tensor], params)
    (plain,) = mine([fitted], DetectParams(0.05, 0.45, 100))
    assert len(a) == len(b) > 0 and not np.allclose(a.scores[:3], plain.scores[:3])
    np.testing.assert_allclose(a.scores, b.scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy.numpy(), atol=0.05)


def test_both_runtimes_serve_another_input_size_alike(tiny_ir):
    mine, _ = ArrayPredictor.from_weights(tiny_ir, input_size=96)
    theirs, _ = Predictor.from_weights(tiny_ir, "cpu", backend="openvino", input_size=96)
    assert mine.config.input_size == theirs.config.input_size == 96
    image = photo(150, 100, seed=3)
    fitted = mine.fit(image)
    assert max(fitted.pixels.shape[:2]) == 96
    params = DetectParams(0.05, 0.45, 100)
    (a,) = mine([fitted], params)
    (b,) = theirs([theirs.fit(image)], params)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.scores, b.scores.numpy(), atol=1e-4)


def test_the_batch_at_once_answers_as_each_image_alone():
    from model.postprocess import postprocess_batch, postprocess_image

    generator = torch.Generator().manual_seed(11)
    boxes = torch.rand(5, 400, 4, generator=generator) * 150
    boxes[..., 2:] += boxes[..., :2] + 4  # x2 > x1, y2 > y1
    scores = torch.rand(5, 400, 7, generator=generator) ** 3
    placements = [
        letterbox_geometry(h, w, 192)[2] for h, w in ((300, 400), (500, 200), (192, 192), (90, 60), (80, 700))
    ]
    params = [
        DetectParams(0.0, 0.5, 1000),  # every candidate: the top-k cut of this image
        DetectParams(0.2, 0.3, 7),
        DetectParams(0.1, 0.45, 100, frozenset({0, 3})),
        DetectParams(0.05, 0.45, 2),
        DetectParams(1.0, 0.45, 10),  # nothing
    ]
    together = postprocess_batch(boxes, scores, placements, params)
    for b, found in enumerate(together):
        alone = postprocess_image(boxes[b], scores[b], placements[b], params[b])
        assert len(found) == len(alone)
        torch.testing.assert_close(found.boxes_xyxy, alone.boxes_xyxy, rtol=0, atol=0)
        torch.testing.assert_close(found.scores, alone.scores, rtol=0, atol=0)
        assert torch.equal(found.labels, alone.labels)
    assert len(together[0]) > 0 and len(together[4]) == 0 and len(together[1]) <= 7


def test_one_copy_letterboxing_of_fitted_images_equals_the_image_by_image_one(tiny_config):
    from model.letterbox import letterbox_fitted_batch

    sizes = ((90, 60), (40, 70), (300, 300), (500, 120))
    arrays = [fit_array(photo(w, h, seed=w), 1, 96) for w, h in sizes]
    tensors = [Fitted(torch.from_numpy(f.pixels.copy()).permute(2, 0, 1), f.width, f.height) for f in arrays]
    expected, placements = letterbox_batch(
        tensors, 96, tiny_config.mean, tiny_config.std, torch.device("cpu")
    )
    staging = torch.full((6, 3, 96, 96), 77, dtype=torch.uint8)  # reused: stale pixels must not show
    for images in (tensors, arrays):  # torch or numpy pixels
        got, got_placements = letterbox_fitted_batch(
            images, 96, tiny_config.mean, tiny_config.std, torch.device("cpu"), staging=staging
        )
        assert got_placements == placements
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)

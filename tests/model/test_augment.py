"""Batched augmentation: a drawn rectangle and its box stay together through every transform."""

import pytest
import torch

from model.training.augment import FILL, AugmentConfig, augment_batch, build_bank

SIZE = 96
RED = torch.tensor([250, 20, 20], dtype=torch.uint8)


def rectangle_bank(count: int = 6, canvas: int = 128):
    """Images of several shapes, each with one red rectangle on a dark background and its box."""
    images, boxes, labels = [], [], []
    shapes = [(60, 100), (100, 60), (80, 80), (45, 150), (150, 45), (50, 50)]
    for k in range(count):
        height, width = shapes[k % len(shapes)]
        image = torch.full((3, height, width), 30, dtype=torch.uint8)
        x1, y1, x2, y2 = int(width * 0.2), int(height * 0.3), int(width * 0.65), int(height * 0.8)
        image[:, y1:y2, x1:x2] = RED.view(3, 1, 1)
        images.append(image)
        boxes.append(torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32))
        labels.append(torch.tensor([k % 20]))
    return build_bank(images, boxes, labels, canvas)


def red_extent(image: torch.Tensor, box: torch.Tensor, margin: int = 3) -> torch.Tensor:
    """Bounding box of the red pixels near ``box`` (within ``margin``), in pixel edges."""
    x1, y1, x2, y2 = box.tolist()
    left, top = max(0, int(x1) - margin), max(0, int(y1) - margin)
    right, bottom = min(image.shape[-1], int(x2) + margin + 1), min(image.shape[-2], int(y2) + margin + 1)
    window = image[:, top:bottom, left:right]
    red = (window[0] > 140) & (window[1] < 100)
    ys, xs = torch.nonzero(red, as_tuple=True)
    return torch.tensor([xs.min() + left, ys.min() + top, xs.max() + 1 + left, ys.max() + 1 + top]).float()


COLOUR_OFF = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig.none(),
        AugmentConfig(mosaic=0.0, flip=1.0, **COLOUR_OFF),
        AugmentConfig(mosaic=0.0, scale=(0.4, 1.6), translate=0.3, **COLOUR_OFF),
        AugmentConfig(mosaic=1.0, **COLOUR_OFF),
    ],
    ids=["letterbox", "flip", "scale-translate", "mosaic"],
)
def test_rectangles_and_boxes_stay_together_within_a_pixel(config: AugmentConfig):
    bank = rectangle_bank()
    generator = torch.Generator().manual_seed(3)
    images, boxes, labels = augment_batch(
        bank, torch.arange(6).repeat(3), SIZE, config, generator, normalize=False
    )
    assert images.shape == (18, 3, SIZE, SIZE) and boxes.shape[:2] == labels.shape
    checked = 0
    for b in range(images.shape[0]):
        for k in (labels[b] >= 0).nonzero().flatten().tolist():
            box = boxes[b, k]
            assert (box >= 0).all() and (box <= SIZE).all() and (box[2:] > box[:2]).all()
            assert (red_extent(images[b], box) - box).abs().max() <= 1.0
            checked += 1
    assert checked >= 12


def test_flip_mirrors_the_box():
    bank = rectangle_bank(1)
    plain, plain_boxes, _ = augment_batch(
        bank, torch.tensor([0]), SIZE, AugmentConfig.none(), torch.Generator(), normalize=False
    )
    flip = AugmentConfig(**{**AugmentConfig.none().__dict__, "flip": 1.0})
    flipped, flipped_boxes, _ = augment_batch(
        bank, torch.tensor([0]), SIZE, flip, torch.Generator(), normalize=False
    )
    torch.testing.assert_close(flipped, plain.flip(-1), atol=1e-3, rtol=0)
    x1, y1, x2, y2 = plain_boxes[0, 0].tolist()
    torch.testing.assert_close(flipped_boxes[0, 0], torch.tensor([SIZE - x2, y1, SIZE - x1, y2]))


def test_boxes_pushed_out_are_dropped():
    bank = rectangle_bank()
    config = AugmentConfig(mosaic=0.0, scale=(1.5, 1.5), translate=0.5, **COLOUR_OFF)
    indices = torch.arange(6).repeat(20)
    images, boxes, labels = augment_batch(
        bank, indices, SIZE, config, torch.Generator().manual_seed(0), normalize=False
    )
    kept = labels[:, 0] >= 0
    assert 0 < kept.sum() < len(kept)  # some boxes left the canvas, some stayed
    for b in range(len(indices)):
        # The whole warped rectangle's area, and how much of it is still on the canvas.
        source = bank.boxes[indices[b], 0]
        scale = 1.5 * SIZE / bank.sizes[indices[b]].max()
        whole = float((source[2] - source[0]) * (source[3] - source[1]) * scale**2)
        visible = float(((images[b, 0] > 140) & (images[b, 1] < 100)).sum())
        if kept[b]:
            assert visible >= config.min_visible * whole - 2 * (boxes[b, 0, 2:] - boxes[b, 0, :2]).sum()
        else:
            assert visible <= config.min_visible * whole + 2 * scale * (source[2:] - source[:2]).sum()


def test_empty_images_work():
    images = [torch.full((3, 40, 50), 90, dtype=torch.uint8)] * 3
    bank = build_bank(images, [torch.zeros(0, 4)] * 3, [torch.zeros(0, dtype=torch.long)] * 3, 64)
    out, boxes, labels = augment_batch(bank, torch.arange(3), 64, AugmentConfig(), torch.Generator())
    assert out.shape == (3, 3, 64, 64) and torch.isfinite(out).all()
    assert boxes.shape == (3, 0, 4) and labels.shape == (3, 0)


def test_a_seed_reproduces_a_batch():
    bank = rectangle_bank()
    first = augment_batch(bank, torch.arange(6), SIZE, AugmentConfig(), torch.Generator().manual_seed(7))
    second = augment_batch(bank, torch.arange(6), SIZE, AugmentConfig(), torch.Generator().manual_seed(7))
    other = augment_batch(bank, torch.arange(6), SIZE, AugmentConfig(), torch.Generator().manual_seed(8))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_letterbox_fill_is_the_mean_colour_and_normalizes_to_zero():
    bank = rectangle_bank(1)
    raw, _, _ = augment_batch(
        bank, torch.tensor([0]), SIZE, AugmentConfig.none(), torch.Generator(), normalize=False
    )
    assert raw[0, :, 0, 0].tolist() == [float(v) for v in FILL]  # the top band is padding
    normalized, _, _ = augment_batch(bank, torch.tensor([0]), SIZE, AugmentConfig.none(), torch.Generator())
    assert normalized[0, :, 0, 0].abs().max() < 0.02

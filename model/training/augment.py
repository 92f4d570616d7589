"""Batched, box-aware augmentation on tensors, on whatever device trains.

Training images live in an :class:`ImageBank`: uint8 ``(N, 3, C, C)`` on the device, each image in
the top-left corner of its canvas, the rest filled with the mean colour, and its boxes padded to
``(N, M, 4)`` with labels ``(N, M)`` (-1 pads). :func:`augment_batch` makes one training batch from
it in a handful of batched tensor operations (no per-image Python, no host sync):

- every output image is one or four *tiles*; a tile is a source image scaled (random factor of
  the letterbox fit), translated, maybe flipped, and clipped to a rectangle of the output. A plain
  image is one tile clipped to the whole canvas; a mosaic is four half-size tiles meeting at a
  random centre, one per quadrant;
- pixels are sampled with one ``grid_sample`` over all tiles and summed into their images;
- boxes go through the same affine map, are clipped to their tile's rectangle, and are dropped
  when too little of them is left;
- colour jitter (brightness, contrast, saturation) per image, then ImageNet normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from model.boxes import pad_boxes
from model.config import IMAGENET_MEAN, IMAGENET_STD
from model.letterbox import shrink

FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms. ``scale`` multiplies the letterbox fit (1 = fit)."""

    scale: tuple[float, float] = (0.5, 1.5)
    translate: float = 0.2  # of the output side, each axis
    flip: float = 0.5
    brightness: float = 0.25  # of full range
    contrast: float = 0.3
    saturation: float = 0.5
    mosaic: float = 0.5  # share of each batch made as mosaics
    min_box_side: float = 2.0  # pixels, after clipping
    min_visible: float = 0.3  # share of a warped box that must stay inside its tile

    @classmethod
    def none(cls) -> AugmentConfig:
        """Letterbox only: what the predictor feeds the network."""
        return cls(
            scale=(1.0, 1.0),
            translate=0.0,
            flip=0.0,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            mosaic=0.0,
        )


@dataclass(frozen=True)
class ImageBank:
    """Decoded training images on one device (see the module docstring)."""

    images: Tensor  # (N, 3, C, C) uint8
    sizes: Tensor  # (N, 2) long: height, width of each image inside its canvas
    boxes: Tensor  # (N, M, 4) float32 xyxy in canvas pixels
    labels: Tensor  # (N, M) long, -1 pads

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageBank:
        return ImageBank(*(t.to(device) for t in (self.images, self.sizes, self.boxes, self.labels)))


def build_bank(
    images: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor], canvas: int
) -> ImageBank:
    """Put uint8 ``(3, H, W)`` images (resized down so the long side is at most ``canvas``) in a bank.

    ``boxes[i]`` are xyxy in image ``i``'s own pixels; they are scaled with it.
    """
    count = len(images)
    device = images[0].device if count else torch.device("cpu")
    bank = torch.empty(count, 3, canvas, canvas, dtype=torch.uint8, device=device)
    bank[:] = torch.tensor(FILL, dtype=torch.uint8, device=device).view(3, 1, 1)
    sizes = torch.zeros(count, 2, dtype=torch.long)
    shrunk_boxes: list[Tensor] = []
    for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
        image, image_boxes = shrink(image, image_boxes.float().cpu(), canvas)
        height, width = image.shape[-2:]
        bank[i, :, :height, :width] = image
        sizes[i] = torch.tensor([height, width])
        shrunk_boxes.append(image_boxes)
    out_boxes, out_labels = pad_boxes(shrunk_boxes, [label.cpu() for label in labels])
    return ImageBank(bank, sizes.to(device), out_boxes.to(device), out_labels.to(device))


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def augment_batch(
    bank: ImageBank,
    indices: Tensor,
    size: int,
    config: AugmentConfig,
    generator: torch.Generator,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch from ``bank[indices]``: images ``(B, 3, S, S)``, boxes ``(B, 4M, 4)``, labels ``(B, 4M)``.

    Images are normalized float32 (or 0-255 float with ``normalize=False``); boxes are xyxy in
    output pixels, labels -1 where a slot holds no box. The first ``round(mosaic * B)`` images are
    mosaics of ``indices[b]`` and three random others; the rest are single images.
    ``generator`` (on the bank's device) makes the batch reproducible.
    """
    device = bank.device
    batch = indices.shape[0]
    mosaics = round(config.mosaic * batch)
    canvas = bank.images.shape[-1]
    # Tiles: one per plain image, four per mosaic. owner: output image; quadrant: 0-3 (0 for plain).
    extra = torch.randint(0, len(bank), (mosaics, 3), generator=generator, device=device)
    source = torch.cat([indices, extra.flatten()])
    owner = torch.cat(
        [torch.arange(batch, device=device), torch.arange(mosaics, device=device).repeat_interleave(3)]
    )
    quadrant = torch.cat(
        [
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.arange(1, 4, device=device).repeat(mosaics),
        ]
    )
    is_mosaic = owner < mosaics
    tiles = source.shape[0]
    height = bank.sizes[source, 0].float()
    width = bank.sizes[source, 1].float()
    lo, hi = config.scale
    scale = size / torch.maximum(height, width) * _uniform(tiles, lo, hi, generator, device)
    scale = torch.where(is_mosaic, scale * 0.5, scale)
    tile_w, tile_h = scale * width, scale * height
    # Where each tile's image lands (left, top) and the rectangle of the output it may cover.
    shift = _uniform(2 * batch, -config.translate, config.translate, generator, device).view(2, batch) * size
    centre_x = size / 2 + shift[0]
    centre_y = size / 2 + shift[1]
    meet = _uniform(2 * batch, 0.25 * size, 0.75 * size, generator, device).view(2, batch)
    meet_x, meet_y = meet[0][owner], meet[1][owner]
    right_side = (quadrant % 2) == 1
    lower_side = quadrant >= 2
    left = torch.where(
        is_mosaic, torch.where(right_side, meet_x, meet_x - tile_w), centre_x[owner] - tile_w / 2
    )
    top = torch.where(
        is_mosaic, torch.where(lower_side, meet_y, meet_y - tile_h), centre_y[owner] - tile_h / 2
    )
    zero = torch.zeros_like(left)
    full = torch.full_like(left, float(size))
    clip = torch.stack(
        [
            torch.where(is_mosaic & right_side, meet_x, zero),
            torch.where(is_mosaic & lower_side, meet_y, zero),
            torch.where(is_mosaic & ~right_side, meet_x, full),
            torch.where(is_mosaic & ~lower_side, meet_y, full),
        ],
        dim=1,
    )  # (T, 4) xyxy output pixels
    flipped = torch.rand(tiles, generator=generator, device=device) < config.flip
    # x_out = a_x * x_src + b_x, y_out = a_y * y_src + b_y.
    a_x = torch.where(flipped, -scale, scale)
    b_x = torch.where(flipped, left + tile_w, left)
    a_y, b_y = scale, top

    # Pixels: an affine grid per tile over the bank canvas (align_corners=False conventions).
    theta = torch.zeros(tiles, 2, 3, device=device)
    theta[:, 0, 0] = size / (a_x * canvas)
    theta[:, 0, 2] = (size - 2 * b_x) / (a_x * canvas) - 1
    theta[:, 1, 1] = size / (a_y * canvas)
    theta[:, 1, 2] = (size - 2 * b_y) / (a_y * canvas) - 1
    grid = F.affine_grid(theta, [tiles, 3, size, size], align_corners=False)
    fill = torch.tensor(FILL, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    sampled = F.grid_sample(bank.images[source].float() - fill, grid, align_corners=False)
    pixel = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    in_x = (pixel >= clip[:, 0:1]) & (pixel < clip[:, 2:3])  # (T, S)
    in_y = (pixel >= clip[:, 1:2]) & (pixel < clip[:, 3:4])
    mask = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)  # (T, 1, S, S)
    images = torch.zeros(batch, 3, size, size, device=device).index_add_(0, owner, sampled * mask) + fill
    images = _jitter(images, config, generator).clamp_(0, 255)

    # Boxes: the same affine map, clipped to the tile's rectangle, dropped when mostly gone.
    src_boxes = bank.boxes[source]  # (T, M, 4)
    labels = bank.labels[source].clone()
    xs = src_boxes[..., 0::2] * a_x[:, None, None] + b_x[:, None, None]
    ys = src_boxes[..., 1::2] * a_y[:, None, None] + b_y[:, None, None]
    warped = torch.stack([xs.min(-1).values, ys.min(-1).values, xs.max(-1).values, ys.max(-1).values], dim=-1)
    clipped = torch.maximum(
        torch.minimum(warped, clip[:, None, 2:].repeat(1, 1, 2)), clip[:, None, :2].repeat(1, 1, 2)
    )
    side = clipped[..., 2:] - clipped[..., :2]
    area = side.prod(-1)
    full_area = (warped[..., 2:] - warped[..., :2]).prod(-1).clamp(min=1e-6)
    keep = (
        (labels >= 0)
        & (side.min(-1).values >= config.min_box_side)
        & (area >= config.min_visible * full_area)
    )
    labels = torch.where(keep, labels, -1)
    most = src_boxes.shape[1]
    slot = owner * 4 + quadrant
    out_boxes = torch.zeros(batch * 4, most, 4, device=device).index_copy_(0, slot, clipped)
    out_labels = torch.full((batch * 4, most), -1, dtype=torch.long, device=device).index_copy_(
        0, slot, labels
    )
    out_boxes = out_boxes.view(batch, 4 * most, 4)
    out_labels = out_labels.view(batch, 4 * most)
    if normalize:
        scale_mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        scale_std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        images = (images - scale_mean) / scale_std
    return images, out_boxes, out_labels


def _jitter(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Per-image brightness, contrast and saturation on 0-255 float images."""
    batch, device = images.shape[0], images.device
    if config.saturation:
        gray = TF.rgb_to_grayscale(images)
        factor = _uniform(batch, 1 - config.saturation, 1 + config.saturation, generator, device)
        images = gray + factor.view(-1, 1, 1, 1) * (images - gray)
    if config.contrast:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        factor = _uniform(batch, 1 - config.contrast, 1 + config.contrast, generator, device)
        images = mean + factor.view(-1, 1, 1, 1) * (images - mean)
    if config.brightness:
        shift = _uniform(batch, -config.brightness, config.brightness, generator, device) * 255
        images = images + shift.view(-1, 1, 1, 1)
    return images

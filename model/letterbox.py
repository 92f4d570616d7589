"""Letterboxing: fit an image into the square model input, and map boxes back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class Letterbox:
    """How one original image sits in the square input: ``input = original * scale + pad``.

    width/height are the original image's size in pixels; the scales are per axis since the
    resized size is rounded to whole pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_original(self, boxes_xyxy: Tensor) -> Tensor:
        """boxes ``(N, 4)`` xyxy in input pixels -> original pixels, clipped to the image."""
        pad = boxes_xyxy.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        scale = boxes_xyxy.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        boxes = (boxes_xyxy - pad) / scale
        limits = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(boxes.clamp(min=0), limits)

    def to_input(self, boxes_xyxy: Tensor) -> Tensor:
        """boxes ``(N, 4)`` xyxy in original pixels -> input pixels."""
        pad = boxes_xyxy.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        scale = boxes_xyxy.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        return boxes_xyxy * scale + pad


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, Letterbox]:
    """The resized size ``(h, w)`` and placement of an ``height x width`` image in a ``size`` square."""
    scale = size / max(height, width)
    new_h = max(1, min(size, round(height * scale)))
    new_w = max(1, min(size, round(width * scale)))
    pad_x = (size - new_w) // 2
    pad_y = (size - new_h) // 2
    box = Letterbox(
        scale_x=new_w / width,
        scale_y=new_h / height,
        pad_x=float(pad_x),
        pad_y=float(pad_y),
        width=width,
        height=height,
    )
    return new_h, new_w, box


@dataclass(frozen=True)
class Fitted:
    """An image already resized to its letterbox fit, with the size it had before.

    What a server keeps of an upload while it waits for the network: a few hundred kilobytes
    instead of the full-resolution pixels, which :func:`fit` frees. Letterboxing a ``Fitted``
    gives exactly what letterboxing the original would on CPU (the resize is the same call).
    """

    pixels: Tensor  # uint8 (3, h, w): the resized image, longer side = the input size
    width: int  # the original image's size in pixels
    height: int


# An axis longer than this (past JPEG's and WebP's largest, so never a camera's photo) is first
# averaged down by a whole factor to 8x its resized length: the antialiased resize builds a table of
# weights that grows with the input's length (612 MB and 1 s for 1 x 40,000,000 pixels, measured).
LONG_AXIS = 65_536
# Elements of float work per step of that reduction (16 MB).
_REDUCE_CHUNK = 4_000_000


def _average_axis(image: Tensor, dim: int, factor: int) -> Tensor:
    """uint8 ``image`` with axis ``dim`` averaged over runs of ``factor`` (a remainder dropped),
    a chunk at a time so that no float copy of the whole image is made."""
    length = image.shape[dim] // factor
    out = torch.empty([*image.shape[:dim], length, *image.shape[dim + 1 :]], dtype=torch.uint8)
    per_position = image.numel() // image.shape[dim] * factor
    step = max(1, _REDUCE_CHUNK // per_position)
    for start in range(0, length, step):
        stop = min(length, start + step)
        block = image.narrow(dim, start * factor, (stop - start) * factor).float()
        shape = [*block.shape[:dim], stop - start, factor, *block.shape[dim + 1 :]]
        out.narrow(dim, start, stop - start).copy_(block.reshape(shape).mean(dim=dim + 1).round())
    return out


def reduce_long_axes(image: Tensor, size: int) -> Tensor:
    """``image`` unchanged unless a side passes :data:`LONG_AXIS`; then that side averaged down by
    a whole factor, still 8x or more its letterbox length in a ``size`` square."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    if max(height, width) <= LONG_AXIS:
        return image
    new_h, new_w, _ = letterbox_geometry(height, width, size)
    for dim, length, target in ((1, height, new_h), (2, width, new_w)):
        factor = length // (8 * target)
        if length > LONG_AXIS and factor > 1:
            image = _average_axis(image, dim, factor)
    return image


def fit(image: Tensor, size: int) -> Fitted:
    """uint8 ``(3, H, W)`` image -> its antialiased resize to the letterbox fit of a ``size`` square."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    new_h, new_w, _ = letterbox_geometry(height, width, size)
    return Fitted(TF.resize(reduce_long_axes(image, size), [new_h, new_w], antialias=True), width, height)


def letterbox_batch(
    images: Sequence[Tensor | Fitted],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, list[Letterbox]]:
    """uint8 ``(3, H_i, W_i)`` RGB images of any sizes -> normalized ``(B, 3, size, size)`` batch.

    Each image is resized (antialiased, aspect kept) so its longer side is ``size``, centred,
    and the border is filled with the normalization mean (zero after normalizing). A
    :class:`Fitted` image is already resized; its placement maps boxes to its original size.
    """
    batch = torch.zeros(len(images), 3, size, size, device=device, dtype=dtype)
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(3, 1, 1)
    boxes: list[Letterbox] = []
    for k, item in enumerate(images):
        image = item.pixels if isinstance(item, Fitted) else item
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 (3, H, W) RGB image, got {image.dtype} {tuple(image.shape)}")
        if isinstance(item, Fitted):
            height, width = item.height, item.width
        else:
            height, width = int(image.shape[1]), int(image.shape[2])
        new_h, new_w, placement = letterbox_geometry(height, width, size)
        if not isinstance(item, Fitted):
            image = reduce_long_axes(image, size)
        on_device = image.to(device, non_blocking=True)
        if isinstance(item, Fitted):
            if tuple(image.shape[1:]) != (new_h, new_w):
                raise ValueError(f"fitted {tuple(image.shape)} is not {height}x{width} fitted to {size}")
            resized = on_device
        else:
            if device.type != "cpu":
                # Antialiased resize of uint8 is a CPU kernel; on the GPU resize in float.
                on_device = on_device.float()
            resized = TF.resize(on_device, [new_h, new_w], antialias=True)
        normalized = (resized.float() / 255.0 - mean_t) / std_t
        top, left = int(placement.pad_y), int(placement.pad_x)
        batch[k, :, top : top + new_h, left : left + new_w] = normalized.to(dtype)
        boxes.append(placement)
    return batch, boxes


def shrink(image: Tensor, boxes: Tensor, long_side: int) -> tuple[Tensor, Tensor]:
    """Resize ``image`` down (antialiased) so its long side is at most ``long_side``; boxes follow."""
    height, width = image.shape[-2:]
    scale = min(1.0, long_side / max(height, width))
    if scale == 1.0:
        return image, boxes
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    image = TF.resize(image, [new_h, new_w], antialias=True)
    return image, boxes * torch.tensor([new_w / width, new_h / height] * 2, device=boxes.device)

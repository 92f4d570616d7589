"""Letterboxing in torch: fit an image into the square model input (the geometry and the box
mapping are in :mod:`model.geometry`, shared with the torch-free path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from model.arrays.fitting import fit_array
from model.geometry import LONG_AXIS, Fitted, Letterbox, letterbox_geometry

__all__ = [
    "LONG_AXIS", "Fitted", "Letterbox", "fit", "fit_on_cpu", "fit_stored", "letterbox_batch",
    "letterbox_geometry", "resize_fit",
]  # fmt: skip


# Elements of float work per step of the long-axis reduction (16 MB).
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
    """uint8 ``(3, H, W)`` CPU image -> its antialiased resize to the letterbox fit of a ``size``
    square, by the CPU's one fit (:func:`model.arrays.fitting.fit_array`, Pillow's): on the CPU the
    torch and numpy runtimes see the same pixels, so they give the same answers."""
    return fit_on_cpu(image.permute(1, 2, 0).numpy(), 1, size)


def fit_on_cpu(
    pixels: np.ndarray, orientation: int, size: int, stored_size: tuple[int, int] | None = None
) -> Fitted:
    """A decoded upload, uint8 ``(H, W, 3)`` as stored, with its EXIF ``orientation`` -> :func:`fit`
    as a viewer shows it, pixels as a ``(3, h, w)`` tensor (the torch runtime's fit on the CPU);
    ``stored_size`` as :func:`~model.arrays.fitting.fit_array`'s."""
    fitted = fit_array(pixels, orientation, size, stored_size)
    return Fitted(torch.from_numpy(fitted.pixels).permute(2, 0, 1), fitted.width, fitted.height)


def resize_fit(image: Tensor, size: int, full: tuple[int, int] | None = None) -> Fitted:
    """uint8 ``(3, H, W)`` image -> torchvision's antialiased resize to the letterbox fit: about
    four times as fast as Pillow's (docs/model.md), for the GPU's CPU-side fit; pixels within a
    step or two of :func:`fit`'s. ``full`` ``(height, width)``: the image's own size where ``image``
    is a reduced decode of it."""
    height, width = full or (int(image.shape[-2]), int(image.shape[-1]))
    new_h, new_w, _ = letterbox_geometry(height, width, size)
    return Fitted(TF.resize(reduce_long_axes(image, size), [new_h, new_w], antialias=True), width, height)


def orient(pixels: Tensor, orientation: int) -> Tensor:
    """Apply an EXIF orientation (1-8) to ``(C, H, W)`` pixels, as a viewer would show them."""
    if orientation == 2:
        return pixels.flip(-1)
    if orientation == 3:
        return pixels.flip(-1, -2)
    if orientation == 4:
        return pixels.flip(-2)
    if orientation == 5:
        return pixels.transpose(-1, -2)
    if orientation == 6:
        return pixels.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return pixels.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return pixels.transpose(-1, -2).flip(-2)
    return pixels


def fit_stored(
    pixels: np.ndarray, orientation: int, size: int, stored_size: tuple[int, int] | None = None
) -> Fitted:
    """A decoded upload, uint8 ``(H, W, 3)`` as stored, with its EXIF ``orientation`` -> its
    :func:`resize_fit` as a viewer shows it (the torch runtime's fit for a GPU); ``stored_size``
    ``(width, height)`` where ``pixels`` is a reduced decode."""
    full = None
    if stored_size is not None:
        width, height = stored_size
        full = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    # (H, W, 3) memory seen as (3, H, W): no copy, in the channels-last layout that the
    # antialiased resize reads fastest.
    if not pixels.flags.writeable:  # torch takes only writable memory
        pixels = pixels.copy()
    return resize_fit(orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation), size, full)


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
        fitted = isinstance(item, Fitted)
        if not fitted and device.type == "cpu" and image.device.type == "cpu":
            image, fitted = fit(image, size).pixels, True  # the CPU's one fit, as served
        elif not fitted:
            image = reduce_long_axes(image, size)
        on_device = image.to(device, non_blocking=True)
        if fitted:
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


def letterbox_fitted_batch(
    images: Sequence[Fitted],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    staging: Tensor | None = None,
) -> tuple[Tensor, list[Letterbox]]:
    """:func:`letterbox_batch` for images fitted already, with one copy to the device: the uint8
    pixels are placed on a host canvas (``staging``: a pinned ``(B', 3, size, size)`` uint8 buffer of
    at least this batch, reused across batches), copied at once, normalized on the device and the
    border set to zero by a mask made there from the placements. The same values as
    :func:`letterbox_batch` (tested)."""
    count = len(images)
    if staging is None or staging.shape[0] < count or staging.shape[-1] != size:
        staging = torch.empty(count, 3, size, size, dtype=torch.uint8)
    canvas = staging[:count]
    placements: list[Letterbox] = []
    spans = []
    for k, item in enumerate(images):
        new_h, new_w, placement = letterbox_geometry(item.height, item.width, size)
        pixels = (
            item.pixels if isinstance(item.pixels, Tensor) else torch.from_numpy(item.pixels).permute(2, 0, 1)
        )
        if pixels.dtype != torch.uint8 or tuple(pixels.shape) != (3, new_h, new_w):
            raise ValueError(
                f"fitted {tuple(pixels.shape)} is not {item.height}x{item.width} fitted to {size}"
            )
        top, left = int(placement.pad_y), int(placement.pad_x)
        canvas[k, :, top : top + new_h, left : left + new_w] = pixels
        placements.append(placement)
        spans.append((top, top + new_h, left, left + new_w))
    pinned = canvas.is_pinned()
    on_device = canvas.to(device, non_blocking=pinned)
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    bounds = torch.tensor(spans, dtype=torch.int64).to(device, non_blocking=False)  # (B, 4)
    line = torch.arange(size, device=device)
    rows = (line >= bounds[:, 0:1]) & (line < bounds[:, 1:2])  # (B, S)
    columns = (line >= bounds[:, 2:3]) & (line < bounds[:, 3:4])
    inside = (rows[:, :, None] & columns[:, None, :])[:, None]  # (B, 1, S, S)
    normalized = (on_device.float() / 255.0 - mean_t) / std_t
    return torch.where(inside, normalized, 0.0).to(dtype), placements


def shrink(image: Tensor, boxes: Tensor, long_side: int) -> tuple[Tensor, Tensor]:
    """Resize ``image`` down (antialiased) so its long side is at most ``long_side``; boxes follow."""
    height, width = image.shape[-2:]
    scale = min(1.0, long_side / max(height, width))
    if scale == 1.0:
        return image, boxes
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    image = TF.resize(image, [new_h, new_w], antialias=True)
    return image, boxes * torch.tensor([new_w / width, new_h / height] * 2, device=boxes.device)

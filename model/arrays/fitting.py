"""The CPU's fit: a decoded upload resized (antialiased bilinear, by Pillow) to its letterbox fit,
then oriented; without torch, and used by the torch runtime on the CPU too, so that both runtimes
see the same pixels (the int8 network turns a one-step difference in a few pixels into boxes a
pixel apart). The orientation is applied to the small fitted image, not the full one.

torchvision's antialiased resize (:func:`model.letterbox.resize_fit`, the GPU's CPU-side fit) was
written to match Pillow's: its pixels differ by at most a step or two of 255.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.geometry import LONG_AXIS, Fitted, letterbox_geometry

# EXIF orientation -> Pillow's transpose of the stored image (as a viewer shows it).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
TRANSPOSING = (5, 6, 7, 8)


def orient_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` as stored -> as a viewer shows it under EXIF ``orientation`` (1-8)."""
    if orientation not in _TRANSPOSE:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(_TRANSPOSE[orientation]))


def fit_array(
    pixels: np.ndarray, orientation: int, size: int, stored_size: tuple[int, int] | None = None
) -> Fitted:
    """uint8 ``(H, W, 3)`` as stored, EXIF ``orientation`` -> :class:`Fitted` with uint8 ``(h, w, 3)``
    pixels, the longer side ``size``, as a viewer shows it. ``stored_size`` ``(width, height)``: the
    image's own size where ``pixels`` is a reduced decode of it (a JPEG decoded at 1/2 to 1/8)."""
    stored_w, stored_h = stored_size or (int(pixels.shape[1]), int(pixels.shape[0]))
    swap = orientation in TRANSPOSING
    height, width = (stored_w, stored_h) if swap else (stored_h, stored_w)
    new_h, new_w, _ = letterbox_geometry(height, width, size)
    target = (new_h, new_w) if swap else (new_w, new_h)  # Pillow's (width, height) as stored
    image = Image.fromarray(pixels)
    factors = tuple(
        max(1, length // (8 * out)) if length > LONG_AXIS else 1
        for length, out in zip(image.size, target, strict=True)
    )
    if factors != (1, 1):  # box-average an over-long axis first, as the torch path does
        image = image.reduce(factors)  # type: ignore[arg-type]
    resized = image.resize(target, Image.Resampling.BILINEAR)
    if orientation in _TRANSPOSE:
        resized = resized.transpose(_TRANSPOSE[orientation])
    return Fitted(np.array(resized), width, height)  # writable: torch takes it as it is

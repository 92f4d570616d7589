"""Where an image sits in the square model input, without torch: what both prediction paths share.

:class:`Letterbox` maps boxes between the input and the original image; :class:`Fitted` is an
image already resized to its letterbox fit. The torch path (:mod:`model.letterbox`) and the
torch-free path (:mod:`model.arrays`) compute the same geometry here, so their boxes agree to
the resize's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# An axis longer than this (past JPEG's and WebP's largest, so never a camera's photo) is first
# averaged down by a whole factor to 8x its resized length: the antialiased resize builds a table of
# weights that grows with the input's length (docs/operations.md, "Limits").
LONG_AXIS = 65_536


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

    def to_original(self, boxes_xyxy: Any) -> Any:
        """boxes ``(N, 4)`` xyxy in input pixels (a torch tensor) -> original pixels, clipped."""
        pad = boxes_xyxy.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        scale = boxes_xyxy.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        boxes = (boxes_xyxy - pad) / scale
        limits = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return boxes.clamp(min=0).minimum(limits)

    def to_original_array(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """The same for a float32 numpy ``(N, 4)`` array."""
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], dtype=np.float32)
        limits = np.array([self.width, self.height, self.width, self.height], dtype=np.float32)
        return np.minimum(np.maximum((boxes_xyxy - pad) / scale, 0), limits)

    def to_input(self, boxes_xyxy: Any) -> Any:
        """boxes ``(N, 4)`` xyxy in original pixels (a torch tensor) -> input pixels."""
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
    instead of the full-resolution pixels, which the fit frees. ``pixels`` is what the predictor
    that fitted it takes: a uint8 ``(3, h, w)`` torch tensor (:func:`model.letterbox.fit`) or a
    uint8 ``(h, w, 3)`` numpy array (:func:`model.arrays.fitting.fit_array`); the longer side is
    the input size.
    """

    pixels: Any
    width: int  # the original image's size in pixels
    height: int

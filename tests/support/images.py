"""Real encoded images made in memory."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image


def image_bytes(
    width: int = 120, height: int = 80, fmt: str = "JPEG", mode: str = "RGB", **save: object
) -> bytes:
    """A real encoded image: a gradient with a bright rectangle, in the given format and mode."""
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    base.paste((250, 40, 40), (width // 4, height // 4, width // 2, height // 2))
    image = base.convert(mode) if mode != "RGB" else base
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but carries almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes(16, 16))
    marker = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[marker + 5 : marker + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def chw(pixels: Any) -> Any:
    """A decoded upload's uint8 ``(H, W, 3)`` array as the torch path's ``(3, H, W)`` tensor, on the
    same memory where torch can take it (so a resize reads it in the same layout as the service's)."""
    import numpy as np
    import torch

    if not pixels.flags.writeable or any(step < 0 for step in pixels.strides):
        pixels = np.array(pixels)
    return torch.from_numpy(pixels).permute(2, 0, 1)

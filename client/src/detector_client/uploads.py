"""What a request carries: each input as a named file, and the packing of files into requests."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ImageInput = str | os.PathLike[str] | bytes | Any  # Any: a PIL.Image.Image

# Room left in a request for multipart headers and boundaries.
_PART_OVERHEAD = 512


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def to_upload(image: ImageInput, index: int) -> Upload:
    """One input as a named file: a path is read, bytes are sent as they are, a PIL image as PNG."""
    if isinstance(image, Upload):
        return image
    if isinstance(image, bytes):
        return Upload(f"image-{index}", image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return Upload(path.name, path.read_bytes())
    if hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image.Image, without importing PIL
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return Upload(f"image-{index}.png", buffer.getvalue())
    raise TypeError(f"cannot send a {type(image).__name__}; give a path, bytes or a PIL image")


def pack(uploads: Sequence[Upload], max_images: int, max_bytes: int) -> list[list[int]]:
    """Indices of ``uploads`` grouped into requests: at most ``max_images`` each and, where more
    than one image, at most ``max_bytes`` of image data (a single larger one goes alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for k, upload in enumerate(uploads):
        cost = len(upload.data) + _PART_OVERHEAD
        if current and (len(current) >= max_images or size + cost > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(k)
        size += cost
    if current:
        groups.append(current)
    return groups

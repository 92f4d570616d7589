"""Image bytes -> uint8 ``(3, H, W)`` RGB tensors, with the limits checked before the damage.

Formats are told by their bytes, not by file names or declared content types. JPEG, PNG, WebP
and BMP decode; of a multi-frame file the first frame is used. The pixel limit is checked from
the header before any pixel data is decoded, so a decompression bomb costs nothing. EXIF
orientation is applied, so boxes refer to the image as a viewer shows it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from app.errors import ClientError

SUPPORTED = "JPEG, PNG, WebP or BMP"
SUPPORTED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")
# Transparent pixels are composited onto white, as image viewers show them.
ALPHA_BACKGROUND = (255, 255, 255)

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


class DecodeError(ClientError):
    """An upload that cannot be decoded: 400 (corrupt), 413 (too many pixels), 415 (a type not decoded)."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: Tensor  # uint8 (3, H, W) RGB, EXIF orientation applied
    format: str  # jpeg | png | webp | bmp

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])


def sniff_format(data: bytes) -> str | None:
    """The image format from the magic bytes: jpeg, png, webp, bmp, or a named unsupported kind."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    unsupported = {
        b"GIF87a": "gif",
        b"GIF89a": "gif",
        b"II*\x00": "tiff",
        b"MM\x00*": "tiff",
        b"%PDF": "pdf",
        b"PK\x03\x04": "zip",
        b"\x00\x00\x00\x0cjP": "jpeg2000",
    }
    for magic, name in unsupported.items():
        if data.startswith(magic):
            return name
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "heif/avif"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html")):
        return "svg/html/xml text"
    return None


def _reason(exc: BaseException) -> str:
    """A decoder's message, kept only when it says something useful and reveals nothing internal."""
    text = str(exc).strip()
    if not text or any(mark in text for mark in ("/", "\\", "<", "object at", ".cpp", ".py")):
        return ""
    return f": {text[:160]}"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (16-bit scaled, alpha composited, CMYK/palette converted)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image_bytes(data: bytes, max_pixels: int, label: str = "image") -> DecodedImage:
    """Decode one upload; raises :class:`DecodeError` (400/413/415) with a message for people.

    ``label`` names the part in messages (e.g. ``part 2 ('cat.png')``).
    """
    if not data:
        raise DecodeError(400, f"{label} is empty; send the bytes of a {SUPPORTED} image")
    kind = sniff_format(data)
    if kind is None:
        raise DecodeError(
            400, f"{label} is not a recognisable image ({len(data)} bytes); send a {SUPPORTED} image"
        )
    if kind not in _PIL_FORMATS:
        raise DecodeError(
            415, f"{label} is a {kind} file, which this service does not decode; send a {SUPPORTED} image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[kind]])
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise DecodeError(
            413, f"{label} claims too many pixels{_reason(exc)}; the limit is {max_pixels:,}"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(
            400,
            f"{label} looks like {kind.upper()} but its header is corrupt{_reason(exc)}; send a valid image",
        ) from exc
    if width < 1 or height < 1:
        raise DecodeError(400, f"{label} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            413,
            f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}; "
            "send a smaller image",
        )
    try:
        if kind == "jpeg" and image.mode in ("RGB", "L"):
            # libjpeg-turbo through torchvision: faster than Pillow, identical pixels.
            pixels = decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
                apply_exif_orientation=True,
            )
        else:
            image.seek(0)  # first frame of an animation
            oriented: Image.Image = ImageOps.exif_transpose(image) or image
            rgb = np.asarray(_to_rgb(oriented))
            pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
    except (OSError, ValueError, SyntaxError, RuntimeError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(
            400, f"{label} is a truncated or corrupt {kind.upper()} image{_reason(exc)}; send the whole file"
        ) from exc
    return DecodedImage(pixels=pixels, format=kind)

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


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG whose header passed every check, its decoding left to the batcher on the inference
    device (``DETECTOR_DEVICE_DECODE``; see :mod:`app.device_decode`)."""

    data: Tensor  # uint8, 1-D: the file's bytes, on CPU as decode_jpeg takes them
    orientation: int  # EXIF orientation, 1 (as stored) to 8
    width: int  # as displayed, after orientation
    height: int
    label: str


# EXIF orientations that swap width and height.
TRANSPOSING = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


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


def reason(exc: BaseException) -> str:
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


def open_checked(data: bytes, max_pixels: int, label: str) -> tuple[Image.Image, str]:
    """The opened (not yet decoded) image and its format, once the header passed every check."""
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
            413, f"{label} claims too many pixels{reason(exc)}; the limit is {max_pixels:,}"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(
            400,
            f"{label} looks like {kind.upper()} but its header is corrupt{reason(exc)}; send a valid image",
        ) from exc
    if width < 1 or height < 1:
        raise DecodeError(400, f"{label} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            413,
            f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}; "
            "send a smaller image",
        )
    return image, kind


def decode_image_bytes(data: bytes, max_pixels: int, label: str = "image") -> DecodedImage:
    """Decode one upload; raises :class:`DecodeError` (400/413/415) with a message for people.

    ``label`` names the part in messages (e.g. ``part 2 ('cat.png')``).
    """
    image, kind = open_checked(data, max_pixels, label)
    return _decode_opened(image, kind, data, label)


def _decode_opened(image: Image.Image, kind: str, data: bytes, label: str) -> DecodedImage:
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
            400, f"{label} is a truncated or corrupt {kind.upper()} image{reason(exc)}; send the whole file"
        ) from exc
    return DecodedImage(pixels=pixels, format=kind)


def check_or_decode(data: bytes, max_pixels: int, label: str = "image") -> DecodedImage | EncodedJpeg:
    """Like :func:`decode_image_bytes`, but an RGB or greyscale JPEG is only checked (header, size,
    pixel limit, EXIF orientation) and left for :func:`app.device_decode.decode_batch`."""
    image, kind = open_checked(data, max_pixels, label)
    if kind != "jpeg" or image.mode not in ("RGB", "L"):
        return _decode_opened(image, kind, data, label)
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError):  # unreadable EXIF: shown as stored
        orientation = 1
    orientation = orientation if orientation in range(1, 9) else 1
    width, height = image.size
    if orientation in TRANSPOSING:
        width, height = height, width
    return EncodedJpeg(
        torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation, width, height, label
    )

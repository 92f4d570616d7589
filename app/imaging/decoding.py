"""Image bytes -> uint8 ``(H, W, 3)`` RGB arrays, with the limits checked before the damage.

Formats are told by their bytes, not by file names or declared content types. JPEG, PNG, WebP
and BMP decode; of a multi-frame file the first frame is used. The pixel limit is checked from
the header before any pixel data is decoded, so a decompression bomb costs nothing; the file's
framing is checked before any decoder runs (:mod:`app.imaging.prescan`), and Pillow reads through a
deadline, so no file holds a thread for long. EXIF orientation is applied, so boxes refer to the
image as a viewer shows it; EXIF that cannot be parsed is ignored (the image as stored), the same
for every format. For the network only the image fitted to its input is kept (:func:`prepare`,
with the predictor's own fit): the full-resolution pixels are freed as soon as the resize has read
them. Nothing here imports torch; JPEGs go through torchvision's libjpeg-turbo where it is
installed (the same pixels as Pillow's, a little faster) and through Pillow where it is not.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.errors import ClientError
from app.imaging.formats import sniff_format
from app.imaging.prescan import MAX_RLE_BMP_PIXELS, StructureError, check_structure
from model.arrays.fitting import TRANSPOSING, orient_array
from model.geometry import Fitted, letterbox_geometry

# A predictor's fit: uint8 (H, W, 3) as stored, its EXIF orientation and the image's own (width,
# height) as stored (larger than the pixels' after a reduced JPEG decode) -> fitted to its input.
Fit = Callable[[np.ndarray, int, tuple[int, int]], Fitted]

SUPPORTED = "JPEG, PNG, WebP or BMP"
SUPPORTED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")
# Transparent pixels are composited onto white, as image viewers show them.
ALPHA_BACKGROUND = (255, 255, 255)

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


class DecodeError(ClientError):
    """An upload that cannot be decoded: 400 (corrupt, or too slow to decode), 413 (too many
    pixels), 415 (a type not decoded)."""


@dataclass(frozen=True)
class DecodedImage:
    stored: np.ndarray  # uint8 (H, W, 3) RGB as stored in the file (or a reduced decode of it)
    orientation: int  # EXIF orientation, 1 (as stored) to 8
    format: str  # jpeg | png | webp | bmp
    stored_size: tuple[int, int]  # (width, height) of the image as stored, whatever was decoded

    @property
    def pixels(self) -> np.ndarray:
        """uint8 ``(H, W, 3)`` RGB as a viewer shows it (EXIF orientation applied)."""
        return orient_array(self.stored, self.orientation)

    @property
    def width(self) -> int:
        return self.stored_size[1 if self.orientation in TRANSPOSING else 0]

    @property
    def height(self) -> int:
        return self.stored_size[0 if self.orientation in TRANSPOSING else 1]


@dataclass(frozen=True)
class Prepared:
    """An upload made ready for the network: fitted to its input, full pixels only if asked for."""

    fitted: Fitted
    full: np.ndarray | None  # uint8 (H, W, 3) as shown, kept only for a drawn answer
    format: str

    @property
    def width(self) -> int:
        return self.fitted.width

    @property
    def height(self) -> int:
        return self.fitted.height


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG whose header passed every check, its decoding left to the batcher on the inference
    device (``DETECTOR_DEVICE_DECODE``; see :mod:`app.imaging.device_decode`)."""

    data: bytes  # the file's bytes
    orientation: int  # EXIF orientation, 1 (as stored) to 8
    width: int  # as displayed, after orientation
    height: int
    label: str


EXIF_ORIENTATION = 0x0112


def reason(exc: BaseException) -> str:
    """A decoder's message, kept only when it says something useful and reveals nothing internal."""
    text = str(exc).strip()
    if not text or any(mark in text for mark in ("/", "\\", "<", "object at", ".cpp", ".py")):
        return ""
    return f": {text[:160]}"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (16-bit scaled, alpha composited, CMYK/palette converted),
    with as few full-size copies as it takes: :data:`DECODE_BYTES_PER_PIXEL` counts them."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if image.mode.startswith("I;16") or array.max(initial=0) > 255:
            # 0-65535 -> 0-255 rounded: (v + 128) // 257, in place on one 32-bit copy
            kind = np.float32 if array.dtype.kind == "f" else np.uint32
            scaled = np.clip(array, 0, 65535).astype(kind, copy=False)
            del array
            scaled += 128
            scaled //= 257
        else:
            scaled = np.clip(array, 0, 255)
            del array
        grey = Image.fromarray(scaled.astype(np.uint8), mode="L")
        del scaled
        return grey.convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        composed = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        composed.paste(rgba, mask=rgba)  # the alpha band blends onto the background in place
        return composed
    return image.convert("RGB")


# Peak bytes of memory per pixel while one image is decoded and fitted (Pillow's image, which keeps
# 4 bytes a pixel for RGB, its conversions, the tensor, the resize), measured per kind on 10 MP
# images and rounded up (docs/operations.md, "Limits"); and per row, Pillow's per-line pointers.
DECODE_BYTES_PER_PIXEL = {"jpeg-direct": 4, "rgb": 9, "other": 13, "wide": 16, "webp": 17}
DECODE_BYTES_PER_ROW = 24


def decode_cost(image: Image.Image, kind: str, fit_bytes_per_pixel: int = 0, turbo: bool = True) -> int:
    """The peak memory, in bytes, that decoding and fitting the opened ``image`` takes, with
    ``fit_bytes_per_pixel`` more for a fit that copies the full image (the numpy runtime's)."""
    if kind == "jpeg" and image.mode in ("RGB", "L") and turbo and _turbo_jpeg() is not None:
        per_pixel = DECODE_BYTES_PER_PIXEL["jpeg-direct"]  # libjpeg-turbo into the array
    elif kind == "webp":
        per_pixel = DECODE_BYTES_PER_PIXEL["webp"]
    elif image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        per_pixel = DECODE_BYTES_PER_PIXEL["wide"]
    elif image.mode == "RGB":
        per_pixel = DECODE_BYTES_PER_PIXEL["rgb"]
    else:
        per_pixel = DECODE_BYTES_PER_PIXEL["other"]
    width, height = image.size
    return int(width * height * (per_pixel + fit_bytes_per_pixel) + height * DECODE_BYTES_PER_ROW)


class _DeadlineReader(io.BytesIO):
    """The upload's bytes as Pillow reads them, refusing to be read past a deadline.

    Pillow pulls its input a block at a time (a byte at a time in its Python decoders, a chunk at
    a time while parsing a PNG), so a decode that overruns stops at its next read.
    """

    def __init__(self, data: bytes, deadline: float, message: str, cancel: threading.Event | None) -> None:
        super().__init__(data)
        self.deadline = deadline
        self.message = message
        self.cancel = cancel

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise DecodeError(400, self.message)
        if self.cancel is not None and self.cancel.is_set():
            raise DecodeError(499, "decoding stopped: its request was already answered or abandoned")
        return super().read(size)


def _timeout_message(label: str, timeout: float) -> str:
    return (
        f"{label} took longer than {timeout:g} s to decode (DETECTOR_DECODE_TIMEOUT_SECONDS); "
        "send a smaller or re-encoded image"
    )


def open_checked(
    data: bytes, max_pixels: int, label: str, timeout: float = 30.0, cancel: threading.Event | None = None
) -> tuple[Image.Image, str]:
    """The opened (not yet decoded) image and its format, once the framing and header passed every
    check. Pillow reads it through a deadline ``timeout`` seconds from now, and stops at its next
    read once ``cancel`` is set (its request failed or went away)."""
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
        check_structure(data, kind, label)
    except StructureError as exc:
        raise DecodeError(exc.status, exc.detail) from exc
    source = _DeadlineReader(data, time.monotonic() + timeout, _timeout_message(label, timeout), cancel)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=[_PIL_FORMATS[kind]])
            width, height = image.size
    except ClientError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(
            413, f"{label} claims too many pixels{reason(exc)}; the limit is {max_pixels:,}"
        ) from exc
    except Exception as exc:  # any parser failure on client bytes is the client's corrupt file
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
    if kind == "bmp" and image.tile and image.tile[0][0] == "bmp_rle" and width * height > MAX_RLE_BMP_PIXELS:
        raise DecodeError(
            413,
            f"{label} is a run-length compressed BMP of {width * height:,} pixels; those are decoded up "
            f"to {MAX_RLE_BMP_PIXELS:,} pixels (send it as PNG or uncompressed BMP)",
        )
    return image, kind


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 (as stored) when EXIF is absent or unreadable."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


@functools.cache
def _turbo_jpeg() -> Any:
    """torchvision's JPEG decoder where torchvision is installed (the torch images), else None."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    return lambda data: (
        decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        .permute(1, 2, 0)
        .numpy()
    )


def decode_image_bytes(
    data: bytes,
    max_pixels: int,
    label: str = "image",
    timeout: float = 30.0,
    cancel: threading.Event | None = None,
    turbo: bool = True,
    reduce_for: int = 0,
) -> DecodedImage:
    """Decode one upload; raises :class:`DecodeError` (400/413/415) with a message for people.

    ``label`` names the part in messages (e.g. ``part 2 ('cat.png')``). ``turbo``: JPEGs through
    torchvision where it is installed (the numpy runtime says no, and stays free of torch).
    ``reduce_for``: the input side the image will be fitted to; a JPEG at least twice its fit in
    each direction is then decoded at 1/2, 1/4 or 1/8 scale by libjpeg (Pillow's ``draft``), still
    at least twice its fit, which the antialiased fit then halves or more (about 15 times as fast
    for a 24 MP photo; docs/operations.md).
    """
    image, kind = open_checked(data, max_pixels, label, timeout, cancel)
    return _decode_opened(image, kind, data, label, turbo, reduce_for)


def draft_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """The smallest decode of a ``width x height`` JPEG that still holds twice its fit in a ``size``
    square, or None where the image is not twice its fit (decoded whole)."""
    new_h, new_w, _ = letterbox_geometry(height, width, size)
    if width < 4 * new_w or height < 4 * new_h:  # no 1/2 decode would keep twice the fit
        return None
    return 2 * new_w, 2 * new_h


def _decode_opened(
    image: Image.Image, kind: str, data: bytes, label: str, turbo: bool, reduce_for: int = 0
) -> DecodedImage:
    stored_size = image.size
    try:
        orientation = exif_orientation(image)
        decoder = _turbo_jpeg() if turbo else None
        wanted = draft_size(*stored_size, reduce_for) if reduce_for and kind == "jpeg" else None
        if wanted is not None and image.mode in ("RGB", "L"):
            image.draft(image.mode, wanted)  # libjpeg's DCT scaling: 1/2, 1/4 or 1/8, >= wanted
            rgb = image.convert("RGB")
            pixels = np.array(rgb)
            rgb.close()
            image.close()
        elif kind == "jpeg" and image.mode in ("RGB", "L") and decoder is not None:
            # libjpeg-turbo through torchvision straight into the array: Pillow's pixels without
            # Pillow's copy. Its own EXIF reading is not used, so that every format orients (or
            # not) the same way.
            image.close()
            pixels = decoder(data)
        else:
            image.seek(0)  # first frame of an animation
            rgb = _to_rgb(image)
            pixels = np.array(rgb)  # one copy of the pixels, (H, W, 3)
            rgb.close()
            image.close()
    except ClientError:
        raise
    except Exception as exc:  # any decoder failure on client bytes is the client's corrupt file
        raise DecodeError(
            400, f"{label} is a truncated or corrupt {kind.upper()} image{reason(exc)}; send the whole file"
        ) from exc
    return DecodedImage(stored=pixels, orientation=orientation, format=kind, stored_size=stored_size)


def prepare(
    data: bytes,
    max_pixels: int,
    fit: Fit,
    label: str,
    timeout: float,
    keep_full: bool = False,
    cancel: threading.Event | None = None,
    turbo: bool = True,
    reduce_for: int = 0,
) -> Prepared:
    """Decode one upload and fit it to the network's input; the full pixels are dropped unless
    ``keep_full`` (a drawn answer needs them, so then no reduced decode either)."""
    reduce_for = 0 if keep_full else reduce_for
    decoded = decode_image_bytes(data, max_pixels, label, timeout, cancel, turbo, reduce_for)
    full = np.ascontiguousarray(decoded.pixels) if keep_full else None
    return Prepared(fit(decoded.stored, decoded.orientation, decoded.stored_size), full, decoded.format)


def check_or_decode(
    data: bytes,
    max_pixels: int,
    label: str = "image",
    timeout: float = 30.0,
    cancel: threading.Event | None = None,
) -> DecodedImage | EncodedJpeg:
    """Like :func:`decode_image_bytes`, but an RGB or greyscale JPEG is only checked (header, size,
    pixel limit, EXIF orientation) and left for :func:`app.imaging.device_decode.decode_batch`."""
    image, kind = open_checked(data, max_pixels, label, timeout, cancel)
    if kind != "jpeg" or image.mode not in ("RGB", "L"):
        return _decode_opened(image, kind, data, label, True)
    orientation = exif_orientation(image)
    width, height = image.size
    if orientation in TRANSPOSING:
        width, height = height, width
    return EncodedJpeg(data, orientation, width, height, label)

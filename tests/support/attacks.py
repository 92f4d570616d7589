"""Generators of legal-but-hostile uploads: files that are small on the wire and costly to decode,
metadata that breaks parsers, and bodies that multiply memory. Nothing is stored; every case is
built from its recipe, so a reader can see exactly what each one is.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def black_png(width: int, height: int) -> bytes:
    """A valid all-black greyscale PNG: about 1 KB per megapixel on the wire."""
    rows = (b"\x00" + b"\x00" * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def blank_png(width: int, height: int, colour_type: int = 6, bit_depth: int = 8) -> bytes:
    """A valid all-zero PNG of any shape and mode (colour type 6: RGBA; 4: grey + alpha; 2: RGB;
    0: grey; bit depth 8 or 16), compressed as it is built: a 1 x 40,000,000 RGBA file is about
    200 KB, and never 200 MB in this process."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    rows_per_block = max(1, 4_000_000 // len(row))
    block = row * rows_per_block
    pieces = []
    for start in range(0, height, rows_per_block):
        count = min(rows_per_block, height - start)
        pieces.append(packer.compress(block if count == rows_per_block else row * count))
    pieces.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(pieces))
        + png_chunk(b"IEND", b"")
    )


def png_chunk_flood(chunks: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A small valid PNG with ``chunks`` empty private ancillary chunks between IHDR and IDAT."""
    width, height = size
    rows = (b"\x00" + b"\x40" * width * 3) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    filler = png_chunk(b"quIt", b"")
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + filler * chunks
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_idat_flood(chunks: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A valid PNG whose image data is split into ``chunks`` IDAT chunks, almost all empty."""
    width, height = size
    rows = zlib.compress((b"\x00" + b"\x40" * width * 3) * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows[:1])
        + png_chunk(b"IDAT", b"") * chunks
        + png_chunk(b"IDAT", rows[1:])
        + png_chunk(b"IEND", b"")
    )


def rle8_bmp(width: int, height: int, code: bytes = b"\x01\x00\x00\x00") -> bytes:
    """A BMP with RLE8 compression whose data is ``code`` once per row: by default one pixel then
    end-of-line, which Pillow's Python decoder pads out to the row's end a byte at a time."""
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    data = code * height + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def _jpeg_segments(data: bytes) -> tuple[bytes, bytes]:
    """(everything before the first SOS, the scans up to and excluding EOI)."""
    first_scan = data.index(b"\xff\xda")
    return data[:first_scan], data[first_scan:-2]


def many_scan_jpeg(scans: int, size: tuple[int, int] = (2048, 2048)) -> bytes:
    """A progressive JPEG of a flat image whose scans are repeated until there are ``scans``.

    Each scan is a full pass over the coefficients, so the decode time grows with the scan count
    while the file stays small (a flat image's scans are a few bytes each).
    """
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, "JPEG", progressive=True, quality=75)
    head, body = _jpeg_segments(buffer.getvalue())
    per_pass = body.count(b"\xff\xda")
    return head + body * max(1, scans // per_pass) + b"\xff\xd9"


def jpeg_scan_count(data: bytes) -> int:
    return data.count(b"\xff\xda")


def photo_like(width: int, height: int, fmt: str = "JPEG", seed: int = 0, **save: object) -> bytes:
    """A textured image (gradients and noise), compressing about as a photograph does."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 64), max(1, width // 64), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


# --- EXIF that Pillow cannot parse or write back -------------------------------------------------


def _tiff(entries: list[tuple[int, int, int, bytes]], little: bool = True) -> bytes:
    """A TIFF/EXIF block with one IFD of ``(tag, type, count, value-or-offset field)`` entries."""
    order = "<" if little else ">"
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")[:4]
    return (b"II*\x00" if little else b"MM\x00*") + struct.pack(order + "I", 8) + ifd + b"\x00\x00\x00\x00"


def exif_orientation_as_long(value: int = 70_000) -> bytes:
    """Orientation (a SHORT) stored as a LONG with an impossible value."""
    return _tiff([(0x0112, 4, 1, struct.pack("<I", value))])


def exif_ascii_as_float() -> bytes:
    """Make (an ASCII tag) stored as a FLOAT, plus an orientation of 6."""
    return _tiff([(0x010F, 11, 1, struct.pack("<f", 1.5)), (0x0112, 3, 1, struct.pack("<H", 6))])


def exif_truncated() -> bytes:
    """A TIFF header that promises an IFD past the end of the block."""
    return b"II*\x00" + struct.pack("<I", 4000) + b"\x01\x00"


def exif_offsets_out_of_range() -> bytes:
    """An IFD entry whose data offset points far outside the block."""
    return _tiff([(0x010F, 2, 400, struct.pack("<I", 0x7FFF_FFF0)), (0x8769, 4, 1, struct.pack("<I", 9999))])


BAD_EXIF = {
    "orientation as LONG 70000": exif_orientation_as_long,
    "ASCII tag as FLOAT": exif_ascii_as_float,
    "truncated TIFF header": exif_truncated,
    "offsets out of range": exif_offsets_out_of_range,
}


def png_with_exif(exif: bytes, size: tuple[int, int] = (48, 32)) -> bytes:
    width, height = size
    rows = (b"\x00" + b"\x80" * width * 3) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"eXIf", exif)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_exif(exif: bytes, mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> bytes:
    """A JPEG (RGB or CMYK) with ``exif`` as its APP1 segment, inserted after SOI."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "JPEG")
    data = buffer.getvalue()
    payload = b"Exif\x00\x00" + exif
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def webp_with_exif(exif: bytes, size: tuple[int, int] = (48, 32)) -> bytes:
    """A lossless WebP in the extended format (VP8X) carrying an EXIF chunk."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, "WEBP", lossless=True)
    data = buffer.getvalue()
    image_chunk = data[12:]  # the VP8L chunk
    width, height = size
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    exif_chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + (b"\x00" if len(exif) % 2 else b"")
    body = b"WEBP" + vp8x + image_chunk + exif_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def exif_cases() -> dict[str, bytes]:
    """Every bad EXIF block in every format that carries EXIF."""
    cases: dict[str, bytes] = {}
    for name, make in BAD_EXIF.items():
        exif = make()
        cases[f"png eXIf: {name}"] = png_with_exif(exif)
        cases[f"jpeg APP1: {name}"] = jpeg_with_exif(exif)
        cases[f"cmyk jpeg APP1: {name}"] = jpeg_with_exif(exif, "CMYK")
        cases[f"webp EXIF: {name}"] = webp_with_exif(exif)
    return cases

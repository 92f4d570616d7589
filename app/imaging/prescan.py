"""Structural checks that bound decode time, run on the file's bytes before any decoder sees them.

A small file can be legal and still cost seconds of CPU: a progressive JPEG whose scans repeat
(each scan is another pass over every coefficient), a PNG with a flood of chunks that Pillow
walks one by one in Python, a run-length BMP decoded by Pillow's pure-Python RLE decoder. These
checks read only the files' framing (segment lengths, chunk lengths), at C speed where they can.
"""

from __future__ import annotations

import re

from app.errors import ClientError

# libjpeg writes 10 scans for a progressive colour JPEG, mozjpeg's scan optimisation at most
# about 20; a sequential JPEG has one per component at most.
MAX_JPEG_SCANS = 64
# A PNG's chunks: a handful of headers and its IDATs (8-64 KB each from common encoders).
MAX_PNG_CHUNKS = 32_768
# Pillow decodes RLE4/RLE8 BMPs in Python; this bounds one to well under a second.
MAX_RLE_BMP_PIXELS = 4_000_000

# The end of a scan's entropy-coded data: 0xFF followed by anything but a stuffed zero or RSTn.
_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


class StructureError(ClientError):
    """A file whose structure would cost more to decode than any real image does."""


def jpeg_scan_count(data: bytes, stop_after: int = MAX_JPEG_SCANS) -> int:
    """The number of scans (SOS segments) in a JPEG, counting at most ``stop_after + 1``."""
    pos, scans, size = 2, 0, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:  # stray bytes between segments: find the next marker
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            if scans > stop_after:
                break
            end = _ENTROPY_END.search(data, pos)
            if end is None:
                break
            pos = end.start()
    return scans


def png_chunk_count(data: bytes, stop_after: int = MAX_PNG_CHUNKS) -> int:
    """The number of chunks in a PNG up to IEND, counting at most ``stop_after + 1``."""
    pos, chunks, size = 8, 0, len(data)
    while pos + 8 <= size and chunks <= stop_after:
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + length
    return chunks


def check_structure(data: bytes, kind: str, label: str) -> None:
    """Raise :class:`StructureError` (400) for a JPEG or PNG framed to be slow to decode."""
    if kind == "jpeg":
        scans = jpeg_scan_count(data)
        if scans > MAX_JPEG_SCANS:
            raise StructureError(
                400,
                f"{label} is a JPEG with more than {MAX_JPEG_SCANS} scans, more than any encoder writes "
                "(each scan is another full decoding pass); re-encode it",
            )
    elif kind == "png":
        chunks = png_chunk_count(data)
        if chunks > MAX_PNG_CHUNKS:
            raise StructureError(
                400,
                f"{label} is a PNG with more than {MAX_PNG_CHUNKS:,} chunks, far more than any encoder "
                "writes; re-encode it",
            )

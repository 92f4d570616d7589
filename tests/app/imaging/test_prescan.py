"""Framing checks before any decoder runs: JPEG scans, PNG chunks, run-length BMPs."""

from __future__ import annotations

import pytest

from app.imaging.decoding import DecodeError, decode_image_bytes
from app.imaging.prescan import MAX_JPEG_SCANS, MAX_PNG_CHUNKS, jpeg_scan_count, png_chunk_count
from tests.support import attacks
from tests.support.images import image_bytes

LIMIT = 40_000_000


def test_scan_count_reads_real_encoders_files():
    assert jpeg_scan_count(image_bytes(64, 48)) == 1
    progressive = attacks.many_scan_jpeg(1, (64, 48))
    assert 2 <= jpeg_scan_count(progressive) <= 12  # libjpeg's progression
    assert jpeg_scan_count(attacks.many_scan_jpeg(200, (64, 48))) == MAX_JPEG_SCANS + 1  # stops counting


def test_scan_count_skips_a_thumbnail_inside_exif():
    thumbnail = image_bytes(16, 16)
    payload = b"Exif\x00\x00" + thumbnail * 3  # SOS markers inside APP1 are not scans
    data = image_bytes(64, 48)
    data = data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]
    assert jpeg_scan_count(data) == 1
    assert decode_image_bytes(data, LIMIT).width == 64


def test_jpeg_with_hundreds_of_scans_is_refused_before_decoding():
    data = attacks.many_scan_jpeg(300, (2048, 2048))
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, LIMIT, "x.jpg")
    assert caught.value.status == 400 and f"more than {MAX_JPEG_SCANS} scans" in caught.value.detail


def test_ordinary_progressive_jpeg_still_decodes():
    assert decode_image_bytes(attacks.many_scan_jpeg(10, (300, 200)), LIMIT).width == 300


def test_png_chunk_flood_is_refused_and_a_split_idat_is_not():
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(attacks.png_chunk_flood(MAX_PNG_CHUNKS + 10), LIMIT, "flood.png")
    assert caught.value.status == 400 and "chunks" in caught.value.detail
    assert png_chunk_count(attacks.png_chunk_flood(100)) == 100 + 3  # IHDR, the flood, IDAT, IEND
    assert decode_image_bytes(attacks.png_idat_flood(2000), LIMIT).width == 32


def test_large_rle_bmp_is_refused_small_one_decodes():
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(attacks.rle8_bmp(16000, 2500), LIMIT, "rle.bmp")
    assert caught.value.status == 413 and "run-length" in caught.value.detail
    assert decode_image_bytes(attacks.rle8_bmp(300, 200), LIMIT).height == 200

"""Hostile input, round 2: decode cost, metadata, form parsing and contract slips, in process.

Each test names the attack it stands for; the generators are in :mod:`tests.hostile.attacks`.
The real-server side (memory peak, the event loop, slow clients) is in ``test_server_bounds``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.decode_pool import PixelBudget
from app.decoding import DecodeError, decode_image_bytes
from app.multipart import MultipartError, TooManyParts, split_multipart
from app.prescan import MAX_JPEG_SCANS, MAX_PNG_CHUNKS, jpeg_scan_count, png_chunk_count
from tests.app.conftest import make_client, wait_ready
from tests.app.test_errors import expect
from tests.conftest import image_bytes
from tests.hostile import attacks

LIMIT = 40_000_000


@pytest.fixture(scope="module")
def client(weights_dir: Path) -> Iterator[TestClient]:
    with make_client(weights_dir) as test_client:
        wait_ready(test_client)
        yield test_client


# --- decode time -----------------------------------------------------------------------------


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


def test_decode_deadline_stops_the_work():
    data = attacks.photo_like(6000, 4000, "PNG")
    start = time.monotonic()
    decode_image_bytes(data, LIMIT, "big.png", timeout=30.0)
    full = time.monotonic() - start
    start = time.monotonic()
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, LIMIT, "big.png", timeout=full / 10)
    stopped = time.monotonic() - start
    assert caught.value.status == 400 and "DETECTOR_DECODE_TIMEOUT_SECONDS" in caught.value.detail
    assert stopped < full / 2, (stopped, full)  # it stopped, it did not run to the end


def test_pixel_budget_bounds_pixels_in_flight_and_lets_small_images_pass():
    budget = PixelBudget(100)
    peak = 0
    order: list[str] = []

    async def job(name: str, pixels: int, seconds: float) -> None:
        nonlocal peak
        async with budget.hold(pixels):
            peak = max(peak, budget.used)
            order.append(name)
            await asyncio.sleep(seconds)

    async def main() -> None:
        await asyncio.gather(
            job("big1", 80, 0.05), job("big2", 80, 0.05), job("small", 10, 0.0), job("huge", 500, 0.0)
        )

    asyncio.run(main())
    assert peak <= 100
    assert order.index("small") < order.index("big2")  # not held behind the large image that waits
    assert set(order) == {"big1", "big2", "small", "huge"}  # over the budget: runs alone, not never


# --- metadata --------------------------------------------------------------------------------


def test_bad_exif_never_500_and_every_format_agrees(client):
    sizes: dict[str, set[tuple[int, int]]] = {}
    for name, data in attacks.exif_cases().items():
        response = client.post("/detect", files={"image": ("x", data)})
        assert response.status_code == 200, (name, response.text)
        result = response.json()["results"][0]
        sizes.setdefault(name.split(": ")[1], set()).add((result["width"], result["height"]))
    # Each bad EXIF block is read (or ignored) the same way in PNG, JPEG, CMYK JPEG and WebP.
    assert all(len(found) == 1 for found in sizes.values()), sizes


def test_odd_multipart_charset_is_400(client):
    body = b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nxx\r\n--zz--\r\n'
    for charset in ("punycode", "no-such-codec", "utf-16"):
        response = client.post(
            "/detect",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary=zz; charset={charset}"},
        )
        assert response.status_code in (400, 415), (charset, response.text)
        assert "detail" in response.json()
    assert client.get("/healthz").status_code == 200


# --- contract slips --------------------------------------------------------------------------


def test_too_many_parts_is_413_however_many(client):
    for count in (17, 33, 100):
        files = [("image", (f"{k}.jpg", image_bytes(8, 8), "image/jpeg")) for k in range(count)]
        expect(client.post("/detect", files=files), 413, "the limit is 16 images")


def test_request_pixel_cap_is_413_naming_the_setting(weights_dir):
    with make_client(weights_dir, max_request_pixels=100_000) as client:
        wait_ready(client)
        files = [("image", (f"{k}.png", attacks.black_png(300, 200), "image/png")) for k in range(2)]
        expect(client.post("/detect", files=files), 413, "DETECTOR_MAX_REQUEST_PIXELS", "120,000")
        assert client.post("/detect", files=files[:1]).status_code == 200


def test_empty_class_list_is_422_not_an_empty_answer(client):
    files = {"image": ("a.jpg", image_bytes())}
    for value in (",", " , ,"):
        expect(client.post("/detect", params={"classes": value}, files=files), 422, "names no class")
    assert client.post("/detect", params={"classes": ""}, files=files).status_code == 200


def test_api_key_whitespace_and_either_header(weights_dir):
    with make_client(weights_dir, api_key="s3cret-key") as client:
        wait_ready(client)
        files = {"image": ("a.jpg", image_bytes())}

        def status(headers: dict[str, str]) -> int:
            return client.post("/detect", files=files, headers=headers).status_code

        assert status({"X-API-Key": "s3cret-key  "}) == 200
        assert status({"Authorization": "Bearer s3cret-key "}) == 200
        assert status({"X-API-Key": "", "Authorization": "Bearer s3cret-key"}) == 200
        assert status({"X-API-Key": "wrong", "Authorization": "Bearer s3cret-key"}) == 200
        assert status({"X-API-Key": "s3cret-key", "Authorization": "Bearer wrong"}) == 200
        assert status({"X-API-Key": "wrong", "Authorization": "Bearer wrong"}) == 401
        assert status({"X-API-Key": "   "}) == 401
        assert status({"Authorization": "Basic s3cret-key"}) == 401


# --- multipart, in memory -----------------------------------------------------------------------


def _multipart(files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://service/detect", files=files)
    return request.read(), request.headers["content-type"]


def test_split_multipart_keeps_bytes_names_and_order():
    payloads = [os.urandom(n) for n in (0, 1, 70_000, 3_000_000)]
    body, content_type = _multipart(
        [("image", (f"ünïcødé-{k}.jpg", data, "image/jpeg")) for k, data in enumerate(payloads)]
    )
    parts = split_multipart(body, content_type, max_parts=10)
    assert [p.data for p in parts] == payloads
    assert [p.filename for p in parts] == [f"ünïcødé-{k}.jpg" for k in range(4)]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'--zz\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc',
            "multipart/form-data; boundary=zz",
        ),
        (b"--zz\r\nNo-Disposition: x\r\n\r\nabc\r\n--zz--\r\n", "multipart/form-data; boundary=zz"),
        (b"whatever", "multipart/form-data"),
    ],
)
def test_split_multipart_refuses_malformed_bodies(body: bytes, content_type: str):
    with pytest.raises(MultipartError):
        split_multipart(body, content_type, max_parts=10)


def test_split_multipart_stops_counting_at_the_limit():
    body, content_type = _multipart([("image", (f"{k}", b"x", "image/png")) for k in range(500)])
    with pytest.raises(TooManyParts):
        split_multipart(body, content_type, max_parts=80)

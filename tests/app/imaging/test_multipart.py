"""The in-memory multipart splitter: bytes, names and order kept; malformed bodies and part floods refused."""

from __future__ import annotations

import os

import httpx
import pytest

from app.imaging.multipart import MultipartError, TooManyParts, split_multipart


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

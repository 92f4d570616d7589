"""Hostile input through the app in process: metadata, form charsets, part and pixel limits, API keys.

Each test names the attack it stands for; the generators are in :mod:`tests.support.attacks`. The
decoder's own bounds are tested in ``tests/app`` (prescan, decode pool, multipart); the real-server
side (memory peak, the event loop, slow clients) is in ``test_server_bounds``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import attacks
from tests.support.app_client import expect, make_client, wait_ready
from tests.support.images import image_bytes

LIMIT = 40_000_000


@pytest.fixture(scope="module")
def client(weights_dir: Path) -> Iterator[TestClient]:
    with make_client(weights_dir) as test_client:
        wait_ready(test_client)
        yield test_client


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

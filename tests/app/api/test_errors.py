"""Every designed error: JSON {"detail": str}, the right status, the part named, never a 500."""

import io
import os

import pytest
from PIL import Image

from tests.support.app_client import expect, make_client, wait_ready
from tests.support.images import image_bytes, jpeg_claiming, png_claiming


def test_no_image_part(client):
    expect(
        client.post("/detect", data={"note": "hello"}, files={"other": ("a.jpg", image_bytes())}),
        400,
        "no file part named 'image'",
        "other",
    )


def test_image_sent_as_a_text_field(client):
    expect(client.post("/detect", data={"image": "not a file"}, files={"x": ("a", b"1")}), 400, "text field")


def test_empty_part_names_the_part(client):
    files = [("image", ("good.jpg", image_bytes())), ("image", ("empty.jpg", b""))]
    expect(client.post("/detect", files=files), 400, "image part 1", "empty.jpg", "empty")


def test_truncated_part(client):
    data = image_bytes(200, 100)
    expect(
        client.post("/detect", files={"image": ("cut.jpg", data[: len(data) // 2])}),
        400,
        "truncated",
        "cut.jpg",
    )


def test_unsupported_type_is_415(client):
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    expect(client.post("/detect", files={"image": ("anim.gif", gif.getvalue())}), 415, "gif", "anim.gif")
    expect(client.post("/detect", files={"image": ("fake.jpg", b"%PDF-1.7 ...")}), 415, "pdf", "fake.jpg")


def test_raw_body_with_a_non_image_content_type(client):
    expect(
        client.post("/detect", content=b"hello", headers={"Content-Type": "text/plain"}), 415, "text/plain"
    )
    expect(client.post("/detect", content=b"", headers={"Content-Type": "image/png"}), 400, "empty")


def test_content_type_that_lies_is_decoded_by_its_bytes(client):
    response = client.post(
        "/detect", content=image_bytes(50, 40, "PNG"), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["width"] == 50


def test_malformed_multipart(client):
    response = client.post(
        "/detect", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"}
    )
    expect(response, 400)


@pytest.mark.parametrize("make", [png_claiming, jpeg_claiming])
def test_header_claiming_huge_dimensions_is_413(client, make):
    expect(client.post("/detect", files={"image": ("bomb", make(65_000, 65_000))}), 413, "pixels")


def test_real_decompression_bomb_is_413(client):
    bomb = io.BytesIO()
    Image.new("L", (8000, 6000)).save(bomb, format="PNG")  # 48 MP of zeros: ~50 KB on the wire
    assert len(bomb.getvalue()) < 200_000
    expect(client.post("/detect", files={"image": ("bomb.png", bomb.getvalue())}), 413, "48,000,000 pixels")
    assert client.get("/readyz").status_code == 200


def test_limits(weights_dir):
    with make_client(weights_dir, max_upload_bytes=5000, max_images_per_request=2) as client:
        wait_ready(client)
        expect(client.post("/detect", files={"image": ("big.jpg", os.urandom(6000))}), 413, "limit")
        files = [("image", (f"{k}.jpg", image_bytes(8, 8))) for k in range(3)]
        expect(client.post("/detect", files=files), 413, "3 images", "the limit is 2 images")
        assert client.post("/detect", files=files[:2]).status_code == 200


def test_body_limit_holds_without_content_length(weights_dir):
    with make_client(weights_dir, max_upload_bytes=1000) as client:
        wait_ready(client)

        def chunks():
            for _ in range(100):
                yield b"\xff" * 100

        expect(client.post("/detect", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413, "limit")


def test_api_key(weights_dir):
    with make_client(weights_dir, api_key="s3cret-key") as client:
        wait_ready(client)
        files = {"image": ("a.jpg", image_bytes())}
        expect(client.post("/detect", files=files), 401, "API key")
        expect(client.post("/detect", files=files, headers={"Authorization": "Bearer wrong"}), 401)
        expect(client.post("/detect", files=files, headers={"X-API-Key": "s3cret-ke"}), 401)
        assert (
            client.post("/detect", files=files, headers={"Authorization": "Bearer s3cret-key"}).status_code
            == 200
        )
        assert client.post("/detect", files=files, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        # Only /detect is protected; probes and the card stay open for orchestrators.
        assert client.get("/readyz").status_code == 200 and client.get("/model").status_code == 200


def test_api_key_never_reaches_the_logs(weights_dir, caplog):
    with make_client(weights_dir, api_key="very-secret-value") as client:
        wait_ready(client)
        client.post(
            "/detect", files={"image": ("a.jpg", image_bytes())}, headers={"X-API-Key": "very-secret-value"}
        )
        client.post(
            "/detect", files={"image": ("a.jpg", image_bytes())}, headers={"X-API-Key": "wrong-guess"}
        )
    assert "very-secret-value" not in caplog.text and "wrong-guess" not in caplog.text


def test_unknown_route_and_method_are_json(client):
    expect(client.get("/nope"), 404)
    expect(client.get("/detect"), 405)

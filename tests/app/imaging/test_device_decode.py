"""JPEGs left to the batcher and decoded a batch at a time (``DETECTOR_DEVICE_DECODE``).

On CUDA the batch decode is nvJPEG; here the same code path runs on the CPU device, so everything
but the kernel is covered: header checks, EXIF orientation, error isolation, the HTTP answers.
"""

import pytest
import torch
from PIL import Image

from app.imaging.decoding import DecodedImage, DecodeError, EncodedJpeg, check_or_decode, decode_image_bytes
from app.imaging.device_decode import decode_batch
from tests.app.imaging.test_decoding import LIMIT, asymmetric_image, encode
from tests.support.app_client import make_client, wait_ready
from tests.support.images import chw, image_bytes

CPU = torch.device("cpu")


def jpeg_with_orientation(orientation: int, width: int = 40, height: int = 24) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(asymmetric_image(width, height), "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_batch_decode_applies_exif_orientation_like_the_cpu_path(orientation):
    data = jpeg_with_orientation(orientation)
    checked = check_or_decode(data, LIMIT, "part 1")
    assert isinstance(checked, EncodedJpeg) and checked.orientation == orientation
    (pixels,) = decode_batch([checked], CPU)
    expected = chw(decode_image_bytes(data, LIMIT).pixels)
    assert isinstance(pixels, torch.Tensor)
    assert torch.equal(pixels, expected)
    assert (checked.width, checked.height) == (expected.shape[2], expected.shape[1])


def test_non_jpeg_and_cmyk_are_decoded_at_once():
    png = check_or_decode(image_bytes(fmt="PNG"), LIMIT)
    cmyk = check_or_decode(image_bytes(fmt="JPEG", mode="CMYK"), LIMIT)
    assert isinstance(png, DecodedImage) and isinstance(cmyk, DecodedImage)
    grey = check_or_decode(image_bytes(fmt="JPEG", mode="L"), LIMIT)
    assert isinstance(grey, EncodedJpeg)
    (pixels,) = decode_batch([grey], CPU)
    assert isinstance(pixels, torch.Tensor) and pixels.shape == (3, 80, 120)


def test_header_limits_hold_before_anything_is_deferred():
    with pytest.raises(DecodeError) as error:
        check_or_decode(image_bytes(200, 100), max_pixels=10_000, label="part 1")
    assert error.value.status == 413


def test_a_corrupt_jpeg_fails_alone_in_its_batch():
    good = image_bytes(120, 80)
    bad = good[: len(good) // 2]  # the header is intact, the scan data is cut
    items = [check_or_decode(data, LIMIT, f"part {k}") for k, data in enumerate([good, bad, good])]
    assert all(isinstance(item, EncodedJpeg) for item in items)
    first, failed, last = decode_batch([*items, torch.zeros(3, 5, 5, dtype=torch.uint8)], CPU)[:3]
    assert isinstance(failed, DecodeError) and failed.status == 400 and "part 1" in failed.detail
    assert torch.equal(first, chw(decode_image_bytes(good, LIMIT).pixels))  # type: ignore[arg-type]
    assert torch.equal(last, first)  # type: ignore[arg-type]


def test_the_service_answers_the_same_with_device_decode(weights_dir):
    files = [
        ("image", ("a.jpg", image_bytes(120, 80), "image/jpeg")),
        ("image", ("b.png", image_bytes(fmt="PNG"), "image/png")),
    ]
    answers = []
    for device_decode in (False, True):
        with make_client(weights_dir, device_decode=device_decode) as client:
            wait_ready(client)
            response = client.post("/detect", files=files)
            assert response.status_code == 200, response.text
            answers.append([result["detections"] for result in response.json()["results"]])
    assert answers[0] == answers[1] and answers[0][0]


def test_a_corrupt_jpeg_is_400_and_the_service_keeps_serving(weights_dir):
    good = image_bytes(120, 80)
    with make_client(weights_dir, device_decode=True) as client:
        wait_ready(client)
        response = client.post(
            "/detect",
            files=[
                ("image", ("ok.jpg", good, "image/jpeg")),
                ("image", ("cut.jpg", good[: len(good) // 2], "image/jpeg")),
            ],
        )
        assert response.status_code == 400
        assert "image part 1 ('cut.jpg')" in response.json()["detail"]  # parts count from 0
        assert client.get("/readyz").status_code == 200
        assert client.post("/detect", files={"image": ("ok.jpg", good, "image/jpeg")}).status_code == 200
        assert 'detector_decode_failures_total{status="400"} 1.0' in client.get("/metrics").text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("orientation", [1, 6])
def test_nvjpeg_agrees_with_the_cpu_decoder(orientation):
    """nvJPEG and libjpeg-turbo may round the IDCT and chroma upsampling differently: the stated
    tolerance is a mean difference under 2 levels and 99% of values within 8."""
    data = [jpeg_with_orientation(orientation, 500, 375), image_bytes(333, 500)]
    checked = [check_or_decode(d, LIMIT) for d in data]
    decoded = decode_batch(checked, torch.device("cuda"))
    for pixels, d in zip(decoded, data, strict=True):
        assert isinstance(pixels, torch.Tensor) and pixels.device.type == "cuda"
        expected = chw(decode_image_bytes(d, LIMIT).pixels)
        assert pixels.shape == expected.shape
        difference = (pixels.cpu().int() - expected.int()).abs().float()
        assert difference.mean() < 2 and difference.quantile(0.99) <= 8

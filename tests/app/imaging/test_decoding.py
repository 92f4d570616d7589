"""Image decoding: formats, modes, EXIF orientation, limits, and what is refused."""

import io

import numpy as np
import pytest
from PIL import Image

from app.imaging.decoding import DecodeError, decode_image_bytes
from app.imaging.formats import sniff_format
from tests.support.images import image_bytes

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def asymmetric_image(width=6, height=4) -> Image.Image:
    """Every pixel distinct, so any rotation or flip is visible."""
    values = np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3) * 3
    return Image.fromarray(values, "RGB")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    original = asymmetric_image(30, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(original, "PNG", exif=exif)  # PNG: lossless, so pixels compare exactly
    decoded = decode_image_bytes(data, LIMIT)
    expected = {
        1: original,
        2: original.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: original.transpose(Image.Transpose.ROTATE_180),
        4: original.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: original.transpose(Image.Transpose.TRANSPOSE),
        6: original.transpose(Image.Transpose.ROTATE_270),
        7: original.transpose(Image.Transpose.TRANSVERSE),
        8: original.transpose(Image.Transpose.ROTATE_90),
    }[orientation]
    assert (decoded.width, decoded.height) == expected.size
    assert np.array_equal(decoded.pixels, np.array(expected))


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_exif_orientation_in_jpeg_swaps_the_size(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image_bytes(encode(asymmetric_image(40, 20), "JPEG", exif=exif), LIMIT)
    assert (decoded.width, decoded.height) == ((40, 20) if orientation == 1 else (20, 40))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "WEBP"),
        ("RGBA", "WEBP"),
        ("RGB", "BMP"),
        ("P", "BMP"),
    ],
)
def test_every_mode_becomes_rgb(mode, fmt):
    data = image_bytes(50, 30, fmt, mode)
    decoded = decode_image_bytes(data, LIMIT)
    assert decoded.pixels.shape == (30, 50, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.format == fmt.lower()


def test_sixteen_bit_values_are_scaled_not_clipped():
    array = np.full((8, 8), 32768, dtype=np.uint16)
    decoded = decode_image_bytes(encode(Image.fromarray(array), "PNG"), LIMIT)
    assert int(decoded.pixels[0, 0, 0]) in (127, 128)


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    decoded = decode_image_bytes(encode(image, "PNG"), LIMIT)
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 9, 9, 9])
    decoded = decode_image_bytes(encode(palette, "PNG", transparency=0), LIMIT)
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = decode_image_bytes(data, LIMIT)
    assert decoded.pixels[5, 5].tolist() == [250, 0, 0]


def test_jpeg_path_matches_pillow():
    data = image_bytes(97, 61, "JPEG")
    decoded = decode_image_bytes(data, LIMIT)
    reference = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(decoded.pixels.astype(int) - reference.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"\x00", 400, "not a recognisable image"),
        (bytes(range(256)) * 4, 400, "not a recognisable image"),
        (b"GIF89a" + b"\x00" * 20, 415, "gif"),
        (b"%PDF-1.4 ...", 415, "pdf"),
        (b"PK\x03\x04" + b"\x00" * 20, 415, "zip"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "svg"),
        (b"<!DOCTYPE html><html></html>", 415, "html"),
    ],
)
def test_refusals(data, status, fragment):
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, LIMIT, "image part 0 ('x.jpg')")
    assert caught.value.status == status
    assert fragment in caught.value.detail and "x.jpg" in caught.value.detail


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_400(fmt):
    data = image_bytes(200, 150, fmt)
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data[: len(data) // 2], LIMIT)
    assert caught.value.status == 400


def test_pixel_limit_is_checked_from_the_header():
    data = image_bytes(300, 200, "PNG")
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, max_pixels=300 * 200 - 1)
    assert caught.value.status == 413 and "60,000 pixels" in caught.value.detail
    assert decode_image_bytes(data, max_pixels=300 * 200).width == 300


def test_sniffing_ignores_names_and_declared_types():
    assert sniff_format(image_bytes(fmt="PNG")) == "png"
    assert sniff_format(image_bytes(fmt="BMP")) == "bmp"
    assert sniff_format(image_bytes(fmt="WEBP")) == "webp"
    assert sniff_format(image_bytes(fmt="JPEG")) == "jpeg"


@pytest.mark.parametrize("brand", [b"heic", b"avif", b"avis", b"msf1", b"hevc", b"heim", b"mif1", b"isom"])
def test_every_iso_media_brand_is_415_not_400(brand: bytes):
    """HEIF/AVIF stills come under many major brands (and MP4 video under others): none is decoded
    here, so each is a type the service does not take (415), not a broken image (400)."""
    box = b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1" + brand
    data = len(box).to_bytes(4, "big") + box + b"\x00" * 200
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, LIMIT, "photo.heic")
    assert caught.value.status == 415, caught.value.detail


def test_jpeg_xl_is_415():
    for data in (b"\xff\x0a" + b"\x00" * 100, b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00" * 100):
        with pytest.raises(DecodeError) as caught:
            decode_image_bytes(data, LIMIT, "photo.jxl")
        assert caught.value.status == 415


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_jpeg_is_decoded_reduced_and_fitted_like_the_whole_one(orientation):
    from model.arrays.fitting import fit_array

    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = Image.open(io.BytesIO(image_bytes(1200, 900, "PNG"))).convert("RGB")
    data = encode(photo, "JPEG", exif=exif, quality=92)
    whole = decode_image_bytes(data, LIMIT)
    reduced = decode_image_bytes(data, LIMIT, reduce_for=64)
    assert reduced.stored.shape[:2] == (113, 150)  # 1/8: still at least twice the fit, 128 x 96
    assert reduced.stored_size == whole.stored_size == (1200, 900)
    assert (reduced.width, reduced.height) == (whole.width, whole.height)
    a = fit_array(reduced.stored, orientation, 64, reduced.stored_size)
    b = fit_array(whole.stored, orientation, 64)
    assert (a.width, a.height) == (b.width, b.height) and a.pixels.shape == b.pixels.shape
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).mean() < 3


def test_an_image_under_twice_its_fit_and_a_drawn_one_are_decoded_whole():
    from app.imaging.decoding import prepare

    data = image_bytes(200, 150, "JPEG")
    assert decode_image_bytes(data, LIMIT, reduce_for=64).stored.shape[:2] == (150, 200)
    big = image_bytes(1200, 900, "JPEG")
    drawn = prepare(big, LIMIT, lambda p, o, s: None, "x", 10.0, keep_full=True, reduce_for=64)  # type: ignore[arg-type,return-value]
    assert drawn.full is not None and drawn.full.shape[:2] == (900, 1200)

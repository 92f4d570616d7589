"""A bad-input corpus, generated (nothing stored): each case is a request and its designed status."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from tests.support import attacks
from tests.support.images import image_bytes, jpeg_claiming, png_claiming


@dataclass(frozen=True)
class Case:
    name: str
    statuses: frozenset[int]  # the designed outcome(s)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None  # multipart parts
    content: bytes | None = None  # raw body
    headers: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # expected (width, height) of the first result on 200

    def request_kwargs(self) -> dict[str, object]:
        if self.files is not None:
            return {"files": self.files}
        return {"content": self.content, "headers": self.headers}


def part(name: str, data: bytes, media: str = "image/jpeg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (name, data, media))]


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def corrupt_jpeg_header() -> bytes:
    data = bytearray(image_bytes(64, 48))
    marker = data.index(b"\xff\xc0")
    data[marker + 4 : marker + 10] = b"\x00" * 6  # zero precision, height, width, components
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def bomb() -> bytes:
    return encoded(Image.new("L", (8000, 6000)), "PNG")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes(80, 40, "JPEG", exif=exif)


def bmp_claiming_huge() -> bytes:
    data = bytearray(image_bytes(8, 8, "BMP"))
    data[18:26] = struct.pack("<ii", 60000, 60000)
    return bytes(data)


def build() -> list[Case]:
    jpeg, png, webp = image_bytes(200, 150), image_bytes(200, 150, "PNG"), image_bytes(200, 150, "WEBP")
    raw = "application/octet-stream"
    cases = [
        Case("empty raw body", frozenset({400}), content=b"", headers={"Content-Type": "image/jpeg"}),
        Case("empty part", frozenset({400}), files=part("e.jpg", b"")),
        Case("one byte", frozenset({400}), files=part("b.jpg", b"\xff")),
        Case("random bytes", frozenset({400}), files=part("r.jpg", os.urandom(20_000))),
        Case("random bytes raw", frozenset({400}), content=os.urandom(5000), headers={"Content-Type": raw}),
        Case("truncated jpeg", frozenset({400}), files=part("t.jpg", jpeg[: len(jpeg) // 2])),
        Case("truncated png", frozenset({400}), files=part("t.png", png[: len(png) // 2])),
        Case("truncated webp", frozenset({400}), files=part("t.webp", webp[: len(webp) // 2])),
        Case("jpeg magic only", frozenset({400}), files=part("m.jpg", b"\xff\xd8\xff")),
        Case("corrupt jpeg header", frozenset({400}), files=part("c.jpg", corrupt_jpeg_header())),
        Case("png claiming 65000^2", frozenset({413}), files=part("h.png", png_claiming(65_000, 65_000))),
        Case("jpeg claiming 65000^2", frozenset({413}), files=part("h.jpg", jpeg_claiming(65_000, 65_000))),
        Case("bmp claiming 60000^2", frozenset({413}), files=part("h.bmp", bmp_claiming_huge())),
        Case("real decompression bomb", frozenset({413}), files=part("bomb.png", bomb())),
        Case("1x1", frozenset({200}), files=part("1.png", image_bytes(1, 1, "PNG")), size=(1, 1)),
        Case("1x2000", frozenset({200}), files=part("tall.png", image_bytes(1, 2000, "PNG")), size=(1, 2000)),
        Case("3000x1", frozenset({200}), files=part("wide.png", image_bytes(3000, 1, "PNG")), size=(3000, 1)),
        Case(
            "16-bit png",
            frozenset({200}),
            files=part("16.png", image_bytes(60, 40, "PNG", "I;16")),
            size=(60, 40),
        ),
        Case(
            "cmyk jpeg",
            frozenset({200}),
            files=part("cmyk.jpg", image_bytes(60, 40, "JPEG", "CMYK")),
            size=(60, 40),
        ),
        Case(
            "palette with transparency",
            frozenset({200}),
            files=part("p.png", encoded(Image.new("P", (30, 20)), "PNG", transparency=0)),
            size=(30, 20),
        ),
        Case("animated gif", frozenset({415}), files=part("a.gif", animated("GIF"))),
        Case("animated webp", frozenset({200}), files=part("a.webp", animated("WEBP")), size=(32, 24)),
        Case("exif orientation 6", frozenset({200}), files=part("r.jpg", exif_rotated()), size=(40, 80)),
        Case(
            "png sent as image/jpeg",
            frozenset({200}),
            content=png,
            headers={"Content-Type": "image/jpeg"},
            size=(200, 150),
        ),
        Case("jpeg sent as text/html", frozenset({415}), content=jpeg, headers={"Content-Type": "text/html"}),
        Case(
            "svg named .jpg",
            frozenset({415}),
            files=part("x.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ),
        Case(
            "pdf named .jpg", frozenset({415}), files=part("x.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")
        ),
        Case(
            "html named .jpg",
            frozenset({415}),
            files=part("x.jpg", b"<!DOCTYPE html><html><body>hi</body></html>"),
        ),
        Case("zip named .jpg", frozenset({415}), files=part("x.jpg", zip_bytes())),
        Case(
            "too many parts",
            frozenset({413}),
            files=[("image", (f"{k}.jpg", image_bytes(8, 8), "image/jpeg")) for k in range(17)],
        ),
        Case("no image part", frozenset({400}), files=[("file", ("x.jpg", jpeg, "image/jpeg"))]),
        Case(
            "malformed multipart",
            frozenset({400}),
            content=b"--zz\r\nnonsense",
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        ),
        Case("no content type", frozenset({415}), content=jpeg, headers={"Content-Type": ""}),
        # Round 2: legal files that are costly to decode, metadata that breaks parsers, odd forms.
        Case(
            "jpeg with 300 scans",
            frozenset({400}),
            files=part("s.jpg", attacks.many_scan_jpeg(300, (256, 256))),
        ),
        Case("png chunk flood", frozenset({400}), files=part("f.png", attacks.png_chunk_flood(40_000))),
        Case("40 MP rle8 bmp", frozenset({413}), files=part("r.bmp", attacks.rle8_bmp(16000, 2500))),
        Case(
            "png with unparseable exif",
            frozenset({200}),
            files=part("e.png", attacks.png_with_exif(attacks.exif_ascii_as_float())),
            size=(32, 48),
        ),
        Case(
            "cmyk jpeg with unparseable exif",
            frozenset({200}),
            files=part("e.jpg", attacks.jpeg_with_exif(attacks.exif_ascii_as_float(), "CMYK")),
            size=(32, 48),
        ),
        Case(
            "multipart charset=punycode",
            frozenset({400}),
            content=b'--zz\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n--zz--\r\n',
            headers={"Content-Type": "multipart/form-data; boundary=zz; charset=punycode"},
        ),
        Case(
            "33 parts",
            frozenset({413}),
            files=[("image", (f"{k}.jpg", image_bytes(8, 8), "image/jpeg")) for k in range(33)],
        ),
        # round 3: memory by decoded bytes, and a failing part among good ones
        Case(
            "1 x 4,000,000 RGBA png",
            frozenset({200}),
            files=part("thin.png", attacks.blank_png(1, 4_000_000), "image/png"),
            size=(1, 4_000_000),
        ),
        Case(
            "4,000,000 x 1 RGBA png",
            frozenset({200}),
            files=part("wide.png", attacks.blank_png(4_000_000, 1), "image/png"),
            size=(4_000_000, 1),
        ),
        Case(
            "16-bit grey+alpha png",
            frozenset({200}),
            files=part("g.png", attacks.blank_png(300, 200, 4, 16), "image/png"),
            size=(300, 200),
        ),
        Case(
            "16-bit RGBA png",
            frozenset({200}),
            files=part("c.png", attacks.blank_png(300, 200, 6, 16), "image/png"),
            size=(300, 200),
        ),
        Case(
            "a bad part among good ones",
            frozenset({400}),
            files=[
                *part("a.jpg", jpeg),
                *part("bad.png", png[: len(png) // 2], "image/png"),
                *[("image", (f"{k}.png", png, "image/png")) for k in range(6)],
            ],
        ),
    ]
    return cases


CORPUS: Callable[[], list[Case]] = build

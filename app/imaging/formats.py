"""What an upload is, told by its first bytes: the formats decoded, and the ones named in a 415."""

from __future__ import annotations

# Major and compatible brands of HEIF and AVIF stills and sequences (ISO/IEC 23008-12, AV1-ISOBMFF).
HEIF_BRANDS = {
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"mif2",
    b"msf1", b"miaf", b"avif", b"avis", b"avio",
}  # fmt: skip


def sniff_format(data: bytes) -> str | None:
    """The image format from the magic bytes: jpeg, png, webp, bmp, or a named unsupported kind."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    unsupported = {
        b"GIF87a": "gif",
        b"GIF89a": "gif",
        b"II*\x00": "tiff",
        b"MM\x00*": "tiff",
        b"%PDF": "pdf",
        b"PK\x03\x04": "zip",
        b"\x00\x00\x00\x0cjP": "jpeg2000",
    }
    for magic, name in unsupported.items():
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":  # an ISO base-media file: HEIF/AVIF stills by any brand, or video
        brands = {data[k : k + 4] for k in range(8, min(len(data), 8 + 4 * 16), 4)} - {b"\x00" * 4}
        return "heif/avif" if brands & HEIF_BRANDS else "iso media (mp4/mov)"
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "jpeg xl"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html")):
        return "svg/html/xml text"
    return None

"""``--draw``: a copy of each photo with its boxes and readable labels (Pillow only).

Labels are in the TrueType font that Pillow ships (``ImageFont.load_default(size)``), sized to the
photo, white on a filled box of the class's colour, above the box where there is room and inside
it otherwise. Drawings are named ``<stem>_<extension>.jpg`` so that ``a.jpg`` and ``a.png`` keep a
drawing each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detector_client.models import ImageResult

# Distinct, saturated colours: a class keeps its colour across drawings.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0),
]  # fmt: skip


def drawing_name(relative: Path) -> Path:
    """Where the drawing of ``relative`` goes: one name per source file, whatever its extension."""
    return relative.with_name(f"{relative.stem}_{relative.suffix.lstrip('.')}.jpg")


def _pillow() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont, ImageOps
    except ImportError as exc:
        raise SystemExit("--draw needs Pillow: pip install 'voc-detector-client[draw]'") from exc
    return Image, ImageDraw, ImageFont, ImageOps


def draw(source: Path, result: ImageResult, target: Path) -> None:
    image_mod, draw_mod, font_mod, ops = _pillow()
    with image_mod.open(source) as opened:
        image = (ops.exif_transpose(opened) or opened).convert("RGB")
    pen = draw_mod.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 300))
    font = font_mod.load_default(size=max(12, round(side / 45)))
    for d in result.detections:
        colour = PALETTE[d.class_id % len(PALETTE)]
        x1, y1, x2, y2 = d.box.xyxy
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{d.class_name} {d.score:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left + 2 * width, bottom - top + 2 * width
        above = y1 - text_h >= 0
        tx, ty = min(x1, max(0, image.width - text_w)), (y1 - text_h if above else y1)
        pen.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        pen.text((tx + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, quality=90)

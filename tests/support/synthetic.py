"""Small synthetic VOC folders (JPEGs + XML + splits) so tests run the real reader on data they make.

Each object is a filled rectangle in a colour fixed per class on a noisy background, so a
small network can learn it in a few steps.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from model.config import VOC_CLASSES
from model.draw import class_colour


def _annotation_xml(
    image_id: str, width: int, height: int, objects: Sequence[tuple[str, tuple[int, int, int, int], bool]]
) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, (x1, y1, x2, y2), difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        box = ET.SubElement(obj, "bndbox")
        # VOC: 1-based, inclusive pixel corners.
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(value)
    return ET.ElementTree(root)


def make_synthetic_voc(
    root: str | Path,
    splits: Mapping[str, int] = {"train": 8, "val": 4},
    year: str = "VOC2007",
    sizes: Sequence[tuple[int, int]] = ((96, 128), (128, 96), (80, 80)),
    max_objects: int = 3,
    classes: Sequence[str] = VOC_CLASSES[:4],
    difficult_rate: float = 0.0,
    empty_rate: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write ``root/{year}/{JPEGImages,Annotations,ImageSets/Main}``; returns ``root`` (a VOCdevkit).

    ``sizes`` are (width, height) choices; ``empty_rate`` is the share of images with no object.
    """
    rng = random.Random(seed)
    year_dir = Path(root) / year
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, count in splits.items():
        ids: list[str] = []
        for _ in range(count):
            counter += 1
            image_id = f"{counter:06d}"
            width, height = rng.choice(list(sizes))
            shade = rng.randint(60, 190)
            image = Image.new("RGB", (width, height), (shade, shade, shade))
            draw = ImageDraw.Draw(image)
            for _ in range(width * height // 40):  # speckle noise
                x, y = rng.randrange(width), rng.randrange(height)
                value = rng.randint(0, 255)
                draw.point((x, y), fill=(value, value, value))
            objects: list[tuple[str, tuple[int, int, int, int], bool]] = []
            n_objects = 0 if rng.random() < empty_rate else rng.randint(1, max_objects)
            for _ in range(n_objects):
                class_id = rng.randrange(len(classes))
                w = rng.randint(max(8, width // 6), max(9, width // 2))
                h = rng.randint(max(8, height // 6), max(9, height // 2))
                x1, y1 = rng.randint(0, width - w), rng.randint(0, height - h)
                draw.rectangle(
                    (x1, y1, x1 + w - 1, y1 + h - 1), fill=class_colour(VOC_CLASSES.index(classes[class_id]))
                )
                objects.append((classes[class_id], (x1, y1, x1 + w, y1 + h), rng.random() < difficult_rate))
            image.save(year_dir / "JPEGImages" / f"{image_id}.jpg", quality=95)
            _annotation_xml(image_id, width, height, objects).write(
                year_dir / "Annotations" / f"{image_id}.xml"
            )
            ids.append(image_id)
        (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return Path(root)

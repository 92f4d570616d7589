"""Tiny labelled datasets in every format ``--data`` takes, written from one generated truth.

Each image is a noisy grey field with filled rectangles, one colour per class, so the same objects
can be written as VOC XML, COCO JSON or YOLO labels and read back for comparison.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 200, 20)]


@dataclass(frozen=True)
class Truth:
    """One image: name, size and objects as (class index, x1, y1, x2, y2) in continuous pixels."""

    name: str
    width: int
    height: int
    objects: list[tuple[int, int, int, int, int]]


def generate(
    count: int, classes: int, seed: int = 0, negatives: int = 0, prefix: str = "img"
) -> list[tuple[Truth, Image.Image]]:
    rng = random.Random(seed)
    made = []
    for k in range(count):
        width, height = rng.choice([(96, 64), (64, 96), (80, 80)])
        shade = rng.randint(80, 170)
        image = Image.new("RGB", (width, height), (shade, shade, shade))
        draw = ImageDraw.Draw(image)
        objects = []
        for _ in range(0 if k < negatives else rng.randint(1, 2)):
            c = rng.randrange(classes)
            w, h = rng.randint(12, width // 2), rng.randint(12, height // 2)
            x1, y1 = rng.randint(0, width - w), rng.randint(0, height - h)
            draw.rectangle((x1, y1, x1 + w - 1, y1 + h - 1), fill=COLOURS[c % len(COLOURS)])
            objects.append((c, x1, y1, x1 + w, y1 + h))
        made.append((Truth(f"{prefix}{k:03d}", width, height, objects), image))
    return made


def voc_xml(truth: Truth, names: list[str], filename: str) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(truth.width)
    ET.SubElement(size, "height").text = str(truth.height)
    for c, x1, y1, x2, y2 in truth.objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[c]
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(value)
    return ET.tostring(root, encoding="unicode")


def write_voc_folder(root: Path, data: list[tuple[Truth, Image.Image]], names: list[str]) -> Path:
    """``root/images/*.jpg`` and ``root/annotations/*.xml`` (the raccoon layout); negatives get no XML."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for truth, image in data:
        image.save(root / "images" / f"{truth.name}.jpg", quality=95)
        if truth.objects:
            (root / "annotations" / f"{truth.name}.xml").write_text(
                voc_xml(truth, names, f"{truth.name}.jpg")
            )
    return root


def coco_json(data: list[tuple[Truth, Image.Image]], names: list[str], first_id: int = 1) -> dict:
    images, annotations = [], []
    for k, (truth, _) in enumerate(data):
        images.append(
            {"id": 100 + k, "file_name": f"{truth.name}.jpg", "width": truth.width, "height": truth.height}
        )
        for c, x1, y1, x2, y2 in truth.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + k,
                    "category_id": first_id + c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": first_id + c, "name": name} for c, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_splits(
    root: Path, splits: dict[str, list[tuple[Truth, Image.Image]]], names: list[str]
) -> Path:
    """Roboflow's COCO export: ``root/{train,valid}/_annotations.coco.json`` beside the images."""
    for split, data in splits.items():
        folder = root / ("valid" if split == "val" else split)
        folder.mkdir(parents=True, exist_ok=True)
        for truth, image in data:
            image.save(folder / f"{truth.name}.jpg", quality=95)
        (folder / "_annotations.coco.json").write_text(json.dumps(coco_json(data, names)))
    return root


def yolo_lines(truth: Truth) -> str:
    lines = []
    for c, x1, y1, x2, y2 in truth.objects:
        cx, cy = (x1 + x2) / 2 / truth.width, (y1 + y2) / 2 / truth.height
        w, h = (x2 - x1) / truth.width, (y2 - y1) / truth.height
        lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo(
    root: Path,
    splits: dict[str, list[tuple[Truth, Image.Image]]],
    names: list[str],
    names_as_dict: bool = False,
) -> Path:
    """``root/data.yaml``, ``images/{split}`` and ``labels/{split}``; negatives get an empty label file."""
    for split, data in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for truth, image in data:
            image.save(root / "images" / split / f"{truth.name}.jpg", quality=95)
            (root / "labels" / split / f"{truth.name}.txt").write_text(yolo_lines(truth))
    listed = "\n".join(f"  {k}: {n}" for k, n in enumerate(names)) if names_as_dict else str(list(names))
    yaml = (
        f"path: .\ntrain: images/train\nval: images/val\nnames:{chr(10) if names_as_dict else ' '}{listed}\n"
    )
    (root / "data.yaml").write_text(yaml)
    return root / "data.yaml"

"""COCO detection JSON (``images``, ``annotations`` with ``bbox`` xywh pixels, ``categories``).

The images folder is found from the JSON's place: ``file_name`` relative to the JSON's folder, to an
``images/`` folder beside it, to the folder above, or to the folder the file's name points at
(``annotations/instances_val2017.json`` -> ``val2017/``). ``iscrowd`` objects are kept as
*difficult*: evaluation ignores them, as the devkit ignores VOC's difficult ones. A category that
only groups others (another category names it as its ``supercategory``) and has no objects of its
own is not a class: Roboflow's exports put one such category first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.data.base import DataError, Record

# Where a folder keeps one COCO file per split: Roboflow exports and the COCO layout.
SPLIT_FILES = (
    "{split}/_annotations.coco.json",
    "annotations/instances_{split}.json",
    "annotations/instances_{split}2017.json",
    "annotations/{split}.json",
    "{split}.json",
)
SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "train": ("train",), "test": ("test",)}


def split_file(folder: Path, split: str) -> Path | None:
    """The COCO file of ``split`` in ``folder``, if the folder has one per split."""
    for name in SPLIT_ALIASES.get(split, (split,)):
        for pattern in SPLIT_FILES:
            path = folder / pattern.format(split=name)
            if path.is_file():
                return path
    return None


def has_split_files(folder: Path) -> bool:
    return any(split_file(folder, s) is not None for s in ("train", "val"))


def _images_folder(path: Path, file_name: str) -> Path:
    base = path.parent
    stem_folder = path.stem.split("_")[-1]  # instances_val2017 -> val2017
    candidates = [base, base / "images", base.parent, base.parent / "images", base.parent / stem_folder]
    candidates += [base.parent / "images" / stem_folder]
    for folder in candidates:
        if (folder / file_name).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"{path}: image {file_name!r} not found in any of: {tried}")


def read_coco(path: Path) -> tuple[list[Record], tuple[str, ...]]:
    """The records of one COCO file and its class names in category-id order."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable COCO JSON file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: a COCO detection file has 'images', 'annotations' and 'categories'")
    try:
        raw = data.get("categories", [])
        categories = sorted((int(c["id"]), str(c["name"])) for c in raw)
        used = {int(a["category_id"]) for a in data.get("annotations", []) if "category_id" in a}
        parents = {str(c.get("supercategory")) for c in raw}
        categories = [(k, n) for k, n in categories if k in used or n not in parents]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable 'categories' ({exc})") from exc
    names = dict(categories)
    if not names:
        raise DataError(f"{path}: no categories")
    records: dict[int, Record] = {}
    folder: Path | None = None
    for k, image in enumerate(data["images"]):
        try:
            image_id, file_name = int(image["id"]), str(image["file_name"])
            width, height = int(image.get("width", 0)), int(image.get("height", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: images[{k}] unreadable ({exc})") from exc
        folder = folder or _images_folder(path, file_name)
        image_path = folder / file_name
        if not image_path.is_file():
            raise DataError(f"{path}: images[{k}] names a missing image {image_path}")
        records[image_id] = Record(image_path, Path(file_name).stem, width, height)
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"{path} (annotations[{k}], id {ann.get('id')})"
        try:
            record = records[int(ann["image_id"])]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} names no image") from None
        category = ann.get("category_id")
        if category not in names:
            raise DataError(f"{where}: unknown category_id {category!r}; the file has {sorted(names)}")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: unreadable bbox ({exc})") from exc
        record.add(names[category], [x, y, x + w, y + h], where, difficult=bool(ann.get("iscrowd", 0)))
    return list(records.values()), tuple(name for _, name in categories)

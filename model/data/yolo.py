"""Ultralytics-style YOLO data: a ``data.yaml`` (``path``, ``train``, ``val``, ``names``) and label files.

Each split entry is a folder of images, a text file listing images, or a list of those, relative to
``path`` (itself relative to the YAML's folder). An image's labels are at the same place with the
last ``images`` folder replaced by ``labels`` and the suffix by ``.txt``: one object a line, ``class
x_centre y_centre width height`` normalized to [0, 1], or ``class x1 y1 x2 y2 ...`` (a polygon,
whose bounding box is used). An image without a label file, or with an empty one, is a negative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.data.base import IMAGE_SUFFIXES, DataError, Record, image_size

TOLERANCE = 1e-3  # normalized coordinates a little past 0 or 1 (rounding in exports) are clipped


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable YAML file ({exc})") from exc
    if not isinstance(data, dict) or ("names" not in data and "nc" not in data):
        raise DataError(f"{path}: a YOLO data.yaml has 'path', 'train', 'val' and 'names'")
    return data


def yolo_names(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    """``names`` as a list, or a dict of id -> name with ids 0..N-1 (``class0``... from ``nc`` alone)."""
    names = data.get("names")
    if names is None:
        return tuple(f"class{k}" for k in range(int(data["nc"])))
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: 'names' keys must be class ids ({exc})") from exc
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        return tuple(str(names[k] if k in names else names[str(k)]) for k in ids)
    if isinstance(names, list) and names:
        return tuple(str(n) for n in names)
    raise DataError(f"{path}: 'names' must be a non-empty list or a dict of id -> name")


def dataset_root(data: dict[str, Any], path: Path) -> Path:
    """``path`` from the YAML: absolute, or relative to the YAML's folder (else to the working
    folder); one that does not exist here (a YAML written on another machine) is the YAML's folder."""
    root = Path(str(data.get("path") or "."))
    if root.is_absolute():
        return root if root.exists() else path.parent
    beside = path.parent / root
    if beside.exists():
        return beside
    return root if root.exists() else path.parent


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def split_images(data: dict[str, Any], path: Path, split: str) -> list[Path] | None:
    """The images of ``split``, or ``None`` when the YAML has no such key."""
    entry = data.get(split)
    if entry is None and split == "val":
        entry = data.get("valid")
    if not entry:
        return None
    root = dataset_root(data, path)
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        target = Path(str(item))
        target = target if target.is_absolute() else root / target
        if not target.exists() and str(item).startswith("../"):
            target = root / str(item)[3:]  # Roboflow's exports: "../train/images" beside the YAML
        if target.is_dir():
            images += sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif target.is_file():
            for line in target.read_text().splitlines():
                line = line.strip()
                if line:
                    listed = Path(line)
                    images.append(listed if listed.is_absolute() else (target.parent / listed).resolve())
        else:
            raise DataError(f"{path}: {split}: {target} is neither a folder of images nor a list file")
    return images


def read_labels(image: Path, names: tuple[str, ...]) -> Record:
    width, height = image_size(image)
    record = Record(image, image.stem, width, height)
    labels = label_path(image)
    if not labels.is_file():
        return record
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        where = f"{labels}:{number}"
        fields = line.split()
        if not fields:
            continue
        try:
            number_id, values = float(fields[0]), [float(v) for v in fields[1:]]
            if not number_id.is_integer():
                raise ValueError(fields[0])
            class_id = int(number_id)
        except ValueError:
            raise DataError(
                f"{where}: expected 'class x_centre y_centre width height', got {line!r}"
            ) from None
        if not 0 <= class_id < len(names):
            raise DataError(f"{where}: unknown class id {class_id}; data.yaml names {len(names)} classes")
        if len(values) == 4:
            cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise DataError(f"{where}: expected 4 box values or a polygon of x y pairs, got {len(values)}")
        if any(v < -TOLERANCE or v > 1 + TOLERANCE for v in box):
            raise DataError(f"{where}: coordinates {values} are not normalized to [0, 1] (outside the image)")
        box = [min(max(v, 0.0), 1.0) for v in box]
        record.add(names[class_id], [box[0] * width, box[1] * height, box[2] * width, box[3] * height], where)
    return record


def read_split(path: Path, split: str) -> tuple[list[Record], tuple[str, ...]] | None:
    """The records of ``split`` and the class names, or ``None`` when the YAML lacks that split."""
    data = read_yaml(path)
    names = yolo_names(data, path)
    images = split_images(data, path, split)
    if images is None:
        return None
    if not images:
        raise DataError(f"{path}: split {split!r} has no images")
    records = [read_labels(image, names) for image in images]
    if not any(label_path(image).is_file() for image in images):
        raise DataError(
            f"{path}: no label file for any {split} image; expected them in labels/ beside images/ "
            f"(for example {label_path(images[0])})"
        )
    return records, names

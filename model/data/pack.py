"""A dataset split re-encoded for travel: smaller JPEGs in numbered parts, each with a manifest.

A pack folder holds ``index.json`` (split, long side, quality, and per part its file, image count,
bytes and sha256) and per part ``part-NNN.bin`` (the JPEGs end to end) with ``part-NNN.json``
(per image: id, offset, length, stored and original size, boxes in stored pixels, labels,
difficult). ``check`` verifies every part the index names (present, sha256, image count) before
anything trains on it. ``model.train --data`` takes a pack folder as well as a VOCdevkit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from model.config import VOC_CLASSES
from model.data.sources import open_dataset, split_canary
from model.letterbox import shrink

FORMAT = "voc-pack/1"
INDEX_FILE = "index.json"


class PackError(ValueError):
    """A pack folder is incomplete or corrupt; the message names the part."""


@dataclass(frozen=True)
class PackedImage:
    """One image of a pack: its JPEG bytes and annotation (boxes in the stored image's pixels)."""

    image_id: str
    jpeg: Tensor  # uint8 (L,)
    boxes_xyxy: Tensor  # (N, 4) float32
    labels: Tensor  # (N,) long
    difficult: Tensor  # (N,) bool


def is_pack(folder: str | Path) -> bool:
    return (Path(folder) / INDEX_FILE).is_file()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_pack(
    roots: Sequence[str | Path],
    split: str,
    out: str | Path,
    long_side: int = 448,
    quality: int = 75,
    part_mib: float = 30.0,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    canary: int = 0,
) -> dict[str, Any]:
    """Write a pack of ``split`` (any format :func:`~model.data.open_dataset` reads) into ``out``;
    returns the index it wrote. ``classes`` default: the data's. ``canary``: leave out the split's
    canary of that many images (:func:`~model.data.sources.split_canary`), to train on the rest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(roots, split, classes)
    if canary:
        dataset = split_canary(dataset, canary)[0]
    classes = dataset.classes
    count = len(dataset) if limit is None else min(limit, len(dataset))
    part_bytes = int(part_mib * 2**20)
    parts: list[dict[str, object]] = []
    blob = bytearray()
    entries: list[dict[str, object]] = []

    def flush() -> None:
        if not entries:
            return
        name = f"part-{len(parts):03d}"
        data = bytes(blob)
        (out / f"{name}.bin").write_bytes(data)
        digest = _sha256(data)
        manifest = {"format": FORMAT, "part": name, "sha256": digest, "images": entries.copy()}
        (out / f"{name}.json").write_text(json.dumps(manifest))
        parts.append({"file": f"{name}.bin", "images": len(entries), "bytes": len(data), "sha256": digest})
        blob.clear()
        entries.clear()

    for index in range(count):
        original, annotation = dataset[index]
        image, boxes = shrink(original, annotation.boxes_xyxy, long_side)
        data = encode_jpeg(image, quality=quality).numpy().tobytes()
        if blob and len(blob) + len(data) > part_bytes:
            flush()
        entries.append(
            {
                "id": annotation.image_id,
                "offset": len(blob),
                "length": len(data),
                "size": list(image.shape[-2:]),
                "original_size": list(original.shape[-2:]),
                "boxes": [[round(v, 3) for v in box] for box in boxes.tolist()],
                "labels": annotation.labels.tolist(),
                "difficult": annotation.difficult.tolist(),
            }
        )
        blob.extend(data)
    flush()
    index_data: dict[str, Any] = {
        "format": FORMAT,
        "split": split,
        "source": [str(r) for r in roots],
        "classes": list(classes),
        "long_side": long_side,
        "quality": quality,
        "images": count,
        "parts": parts,
    }
    (out / INDEX_FILE).write_text(json.dumps(index_data, indent=2) + "\n")
    return index_data


def check_pack(folder: str | Path) -> dict[str, Any]:
    """Verify every part named by the index: present, sha256 and image count; returns the index."""
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise PackError(f"{index_path}: missing; is {folder} a pack folder?")
    index = json.loads(index_path.read_text())
    if index.get("format") != FORMAT:
        raise PackError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
    total = 0
    for part in index["parts"]:
        path = folder / part["file"]
        if not path.is_file():
            raise PackError(f"{path}: missing part ({len(index['parts'])} parts expected)")
        digest = _sha256(path.read_bytes())
        if digest != part["sha256"]:
            raise PackError(
                f"{path}: sha256 {digest[:12]}... does not match the index's {part['sha256'][:12]}..."
            )
        manifest = json.loads(path.with_suffix(".json").read_text())
        if manifest["sha256"] != digest or len(manifest["images"]) != part["images"]:
            raise PackError(f"{path.with_suffix('.json')}: manifest does not match its part")
        total += part["images"]
    if total != index["images"]:
        raise PackError(f"{index_path}: parts hold {total} images, the index says {index['images']}")
    return index


def read_pack(folder: str | Path, classes: Sequence[str] = VOC_CLASSES) -> list[PackedImage]:
    """Every image of a checked pack, in order."""
    folder = Path(folder)
    index = check_pack(folder)
    if list(index["classes"]) != list(classes):
        raise PackError(f"{folder}: pack classes {index['classes']} differ from the model's")
    images: list[PackedImage] = []
    for part in index["parts"]:
        data = torch.frombuffer(bytearray((folder / part["file"]).read_bytes()), dtype=torch.uint8)
        manifest = json.loads((folder / part["file"]).with_suffix(".json").read_text())
        for entry in manifest["images"]:
            images.append(
                PackedImage(
                    image_id=entry["id"],
                    jpeg=data[entry["offset"] : entry["offset"] + entry["length"]],
                    boxes_xyxy=torch.tensor(entry["boxes"], dtype=torch.float32).reshape(-1, 4),
                    labels=torch.tensor(entry["labels"], dtype=torch.long),
                    difficult=torch.tensor(entry["difficult"], dtype=torch.bool),
                )
            )
    return images


def decode_packed(images: Sequence[PackedImage], device: torch.device, chunk: int = 256) -> list[Tensor]:
    """Decode the JPEGs on ``device`` (nvJPEG on CUDA), ``chunk`` at a time; uint8 ``(3, H, W)`` RGB."""
    from torchvision.io import ImageReadMode

    decoded: list[Tensor] = []
    for start in range(0, len(images), chunk):
        batch = [item.jpeg for item in images[start : start + chunk]]
        if device.type == "cuda":
            decoded += decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)
        else:
            decoded += [decode_jpeg(jpeg, mode=ImageReadMode.RGB) for jpeg in batch]
    return decoded

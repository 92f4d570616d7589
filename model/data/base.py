"""What every dataset format becomes: annotated records, a torch ``Dataset`` over them, and splits.

Boxes leave this package as xyxy float32 in 0-based continuous pixel coordinates of the image
after its EXIF orientation is applied (the pixels :func:`read_image` returns).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# A box may overhang its image by this many pixels (rounding in exports); it is clipped.
BOX_TOLERANCE_PX = 2.0
# Sources without splits of their own are split by this share of val images, with this seed.
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


class DataError(ValueError):
    """A dataset cannot be read as given; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class Annotation:
    """One image's objects. boxes_xyxy ``(N, 4)`` float32 original pixels; labels, difficult ``(N,)``."""

    image_id: str
    width: int
    height: int
    boxes_xyxy: Tensor
    labels: Tensor
    difficult: Tensor


@dataclass
class Record:
    """One image and its objects as a format reader found them, class *names* not yet ids.

    ``where`` names the annotation file (and line) for error messages. ``width``/``height`` are the
    image's size after EXIF orientation, 0 where the format does not say (then boxes are not checked).
    """

    image_path: Path
    image_id: str
    width: int
    height: int
    boxes_xyxy: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def add(self, name: str, box_xyxy: Sequence[float], where: str, difficult: bool = False) -> None:
        self.boxes_xyxy.append(check_box(box_xyxy, self.width, self.height, where))
        self.names.append(name)
        self.difficult.append(difficult)
        self.where.append(where)


def check_box(box_xyxy: Sequence[float], width: int, height: int, where: str) -> list[float]:
    """The box clipped to its image; an error naming ``where`` when it is empty, not finite or outside."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    if not all(v == v and abs(v) != float("inf") for v in (x1, y1, x2, y2)):
        raise DataError(f"{where}: box {[x1, y1, x2, y2]} is not finite")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: box {[x1, y1, x2, y2]} is empty (x_max <= x_min or y_max <= y_min)")
    if width and height:
        tol = BOX_TOLERANCE_PX
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            raise DataError(f"{where}: box {[x1, y1, x2, y2]} lies outside its {width}x{height} image")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    return [x1, y1, x2, y2]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only; a clear error when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing image") from exc
    except Exception as exc:  # any decoder error on a user's file
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_image(path: Path) -> Tensor:
    """uint8 ``(3, H, W)`` RGB, EXIF orientation applied; Pillow for what torchvision does not decode."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        from PIL import ImageOps

        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        return (
            torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            .reshape(rgb.height, rgb.width, 3)
            .permute(2, 0, 1)
            .contiguous()
        )


def split_by_fraction(
    records: list[Record], split: str, fraction: float, seed: int, source: str
) -> list[Record]:
    """``train``/``val`` of a source that has no splits: a fixed-seed shuffle of the image ids,
    ``fraction`` of them val; ``all`` keeps every image."""
    if split == "all":
        return records
    if split not in ("train", "val"):
        raise DataError(
            f"{source} has no split {split!r}: it is split by --split-fraction into 'train' and 'val' "
            "('all' for every image)"
        )
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--split-fraction must be between 0 and 1, got {fraction}")
    ordered = sorted(records, key=lambda r: str(r.image_path))
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * fraction)) if len(ordered) > 1 else 0
    chosen = ordered[:n_val] if split == "val" else ordered[n_val:]
    return sorted(chosen, key=lambda r: str(r.image_path))


class DetectionDataset(Dataset[tuple[Tensor, Annotation]]):
    """Images and their objects: ``(uint8 (3, H, W) RGB image, Annotation)`` per item.

    ``classes`` fixes the label ids (names in id order); a record naming another class is an error
    naming its file. ``description`` says what was read (format, path, split) for logs and cards.
    """

    def __init__(
        self,
        records: Sequence[Record],
        classes: Sequence[str],
        description: str = "",
        transform: Callable[[Tensor, Annotation], Any] | None = None,
    ) -> None:
        self.classes = tuple(classes)
        self.description = description
        self.transform = transform
        index = {name: k for k, name in enumerate(self.classes)}
        self.records = list(records)
        self._annotations: list[Annotation] = []
        for record in self.records:
            for name, where in zip(record.names, record.where, strict=True):
                if name not in index:
                    raise DataError(f"{where}: unknown class {name!r}; expected one of {list(self.classes)}")
            self._annotations.append(
                Annotation(
                    image_id=record.image_id,
                    width=record.width,
                    height=record.height,
                    boxes_xyxy=torch.tensor(record.boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
                    labels=torch.tensor([index[n] for n in record.names], dtype=torch.int64),
                    difficult=torch.tensor(record.difficult, dtype=torch.bool),
                )
            )

    def __len__(self) -> int:
        return len(self.records)

    def annotation(self, index: int) -> Annotation:
        return self._annotations[index]

    def __getitem__(self, index: int) -> Any:
        image = read_image(self.records[index].image_path)
        annotation = self._annotations[index]
        if self.transform is not None:
            return self.transform(image, annotation)
        return image, annotation

    def object_count(self) -> int:
        return sum(len(r.names) for r in self.records)


def collate_raw(batch: Sequence[tuple[Tensor, Annotation]]) -> tuple[list[Tensor], list[Annotation]]:
    """Raw images of different sizes stay lists; the predictor letterboxes them."""
    return [item[0] for item in batch], [item[1] for item in batch]

"""Pascal VOC data: the VOCdevkit reader and the collate of raw images (augmentation: :mod:`model.augment`).

Boxes leave this module as xyxy floats in 0-based continuous pixel coordinates: a VOC box
with 1-based inclusive corners ``(xmin, ymin, xmax, ymax)`` becomes
``(xmin - 1, ymin - 1, xmax, ymax)``, so it covers exactly the pixels the XML names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from model.config import VOC_CLASSES


@dataclass(frozen=True)
class Annotation:
    """One image's objects. boxes_xyxy ``(N, 4)`` float32 original pixels; labels, difficult ``(N,)``."""

    image_id: str
    width: int
    height: int
    boxes_xyxy: Tensor
    labels: Tensor
    difficult: Tensor


@dataclass(frozen=True)
class VOCSample:
    image_path: Path
    annotation_path: Path


def parse_annotation(path: Path, classes: Sequence[str] = VOC_CLASSES) -> Annotation:
    """Read one VOC XML file; an unknown class name is an error naming the file."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = int(size.findtext("width", "0")) if size is not None else 0
    height = int(size.findtext("height", "0")) if size is not None else 0
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    index = {name: k for k, name in enumerate(classes)}
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise ValueError(f"{path}: unknown class {name!r}; expected one of {list(classes)}")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{path}: object {name!r} has no bndbox")
        x1, y1, x2, y2 = (float(bnd.findtext(tag, "nan")) for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
        labels.append(index[name])
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return Annotation(
        image_id=path.stem,
        width=width,
        height=height,
        boxes_xyxy=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        difficult=torch.tensor(difficult, dtype=torch.bool),
    )


def year_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a year folder (has ``ImageSets``), else its ``VOC*`` children."""
    if (root / "ImageSets").is_dir():
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "ImageSets").is_dir())
    if not folders:
        raise FileNotFoundError(f"{root}: no VOC year folder (one with ImageSets/Main) found")
    return folders


def list_samples(roots: Sequence[str | Path], split: str) -> list[VOCSample]:
    """Every image named by ``ImageSets/Main/{split}.txt`` under each root's year folders."""
    samples: list[VOCSample] = []
    for root in roots:
        for year in year_folders(Path(root)):
            split_file = year / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                continue
            for line in split_file.read_text().split("\n"):
                image_id = line.strip().split(" ")[0]
                if image_id:
                    samples.append(
                        VOCSample(
                            year / "JPEGImages" / f"{image_id}.jpg",
                            year / "Annotations" / f"{image_id}.xml",
                        )
                    )
    if not samples:
        raise FileNotFoundError(f"no images in split {split!r} under {[str(r) for r in roots]}")
    return samples


def read_image(path: Path) -> Tensor:
    """uint8 ``(3, H, W)`` RGB, EXIF orientation applied."""
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)


class VOCDetection(Dataset[tuple[Tensor, Annotation]]):
    """Raw VOC samples: ``(uint8 (3, H, W) RGB image, Annotation)``; ``transform`` maps that pair."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        split: str,
        transform: Callable[[Tensor, Annotation], Any] | None = None,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        self.samples = list_samples(roots, split)
        self.transform = transform
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def annotation(self, index: int) -> Annotation:
        return parse_annotation(self.samples[index].annotation_path, self.classes)

    def __getitem__(self, index: int) -> Any:
        sample = self.samples[index]
        image = read_image(sample.image_path)
        annotation = parse_annotation(sample.annotation_path, self.classes)
        if self.transform is not None:
            return self.transform(image, annotation)
        return image, annotation


def collate_raw(batch: Sequence[tuple[Tensor, Annotation]]) -> tuple[list[Tensor], list[Annotation]]:
    """Raw images of different sizes stay lists; the predictor letterboxes them."""
    return [item[0] for item in batch], [item[1] for item in batch]

"""Detection datasets in every format the project reads, as one kind of torch ``Dataset``.

:func:`open_dataset` detects the format of each path (:mod:`model.data.sources`): a VOCdevkit, a
folder of VOC-style XMLs, COCO JSON, or an Ultralytics ``data.yaml``. Every reader returns boxes as
xyxy float32 in 0-based continuous pixels of the EXIF-oriented image (:mod:`model.data.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from model.config import VOC_CLASSES
from model.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    Annotation,
    DataError,
    DetectionDataset,
    collate_raw,
    read_image,
)
from model.data.sources import describe, open_dataset, read_source, split_canary
from model.data.voc import devkit_records, list_samples, parse_annotation

__all__ = [
    "DEFAULT_SPLIT_SEED",
    "DEFAULT_VAL_FRACTION",
    "Annotation",
    "DataError",
    "DetectionDataset",
    "VOCDetection",
    "collate_raw",
    "describe",
    "list_samples",
    "open_dataset",
    "parse_annotation",
    "read_image",
    "read_source",
    "split_canary",
]


class VOCDetection(DetectionDataset):
    """The images of ``ImageSets/Main/{split}.txt`` under VOCdevkit ``roots``."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        split: str,
        transform: Callable[[Tensor, Annotation], Any] | None = None,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        super().__init__(
            devkit_records(roots, split),
            classes,
            f"{[str(r) for r in roots]} (VOCdevkit): split {split!r}",
            transform,
        )

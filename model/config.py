"""Frozen configuration of the detector: the classes, the architecture and its input."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

MODEL_NAME = "resnet18-grid"


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild the network and read its output.

    ``input_size`` is the side of the square letterboxed input in pixels; it must be a
    multiple of ``stride`` (32 for a ResNet18 trunk up to ``layer4``).
    """

    classes: tuple[str, ...] = VOC_CLASSES
    input_size: int = 416
    stride: int = 32
    head_hidden_channels: int = 0  # 0: the design's single 1x1 conv head
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.input_size % self.stride:
            raise ValueError(
                f"input_size must be a positive multiple of the stride {self.stride}, got {self.input_size}"
            )
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("classes must be a non-empty list of unique names")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def grid_size(self) -> int:
        return self.input_size // self.stride

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        known = {k: data[k] for k in ("input_size", "stride", "head_hidden_channels", "name") if k in data}
        return cls(
            classes=tuple(data.get("classes", VOC_CLASSES)),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(data.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
            **known,
        )


@dataclass(frozen=True)
class DetectParams:
    """Per-image post-processing parameters.

    ``class_ids`` restricts the output to those class ids; ``None`` keeps every class.
    """

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_ids: frozenset[int] | None = None

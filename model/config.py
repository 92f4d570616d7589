"""Frozen configuration of the detector: the classes, the architecture and its input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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
TRUNK_STRIDE = 32  # ResNet18 up to layer4
NECK_STRIDE = 16  # layer4 upsampled and fused with layer3
FINE_STRIDE = 8  # the neck upsampled again and fused with layer2 (``stride8_level``)
# An object trains the stride-8 level when the square root of its area, in input pixels, is
# under this (about 6 stride-8 cells; 3 stride-16 cells); every other object trains stride 16.
LEVEL_SPLIT = 48
# How the head's output reads, for both prediction paths (torch and numpy): the box channels come
# first, then objectness, then the class logits; exp(tw) is clamped at this log size.
BOX_CHANNELS = 4  # tx, ty, tw, th
MAX_LOG_SIZE = 10.0
# Candidates kept per image before NMS; bounds NMS cost when the threshold is near zero.
PRE_NMS_TOP_K = 1000


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild the network and read its output.

    ``input_size`` is the side of the square letterboxed input in pixels; it must be a
    multiple of 32 (the ResNet18 trunk goes down to ``layer4``, stride 32). ``neck_channels``
    0 reads the grid off ``layer4`` (stride 32, the design's seed); above 0 a light neck
    upsamples ``layer4``, fuses it with ``layer3`` and gives a stride-16 grid of that many
    channels. Weights saved before the neck existed have neither key and load as stride 32.
    ``stride8_level`` (needs the neck) adds a second, finer level: the neck upsampled again and
    fused with ``layer2``, read by a head of its own at stride 8; objects smaller than
    ``level_split`` input pixels (square root of the area) train it, the others stride 16.
    Weights saved before it existed load as one level.
    """

    classes: tuple[str, ...] = VOC_CLASSES
    input_size: int = 416
    head_hidden_channels: int = 0  # 0: the design's single 1x1 conv head
    neck_channels: int = 0  # 0: no neck, stride 32; > 0: stride-16 neck of this width
    stride8_level: bool = False  # a second, stride-8 level for small objects (needs the neck)
    level_split: int = LEVEL_SPLIT  # objects under this many pixels train the stride-8 level
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.input_size % TRUNK_STRIDE:
            raise ValueError(
                f"input_size must be a positive multiple of {TRUNK_STRIDE}, got {self.input_size}"
            )
        if self.neck_channels < 0 or self.head_hidden_channels < 0:
            raise ValueError("neck_channels and head_hidden_channels must be >= 0")
        if self.stride8_level and not self.neck_channels:
            raise ValueError("the stride-8 level builds on the stride-16 neck: set neck_channels > 0")
        if self.level_split <= 0:
            raise ValueError(f"level_split must be > 0, got {self.level_split}")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("classes must be a non-empty list of unique names")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stride(self) -> int:
        """Input pixels per grid cell: 16 with the neck, 32 without."""
        return NECK_STRIDE if self.neck_channels else TRUNK_STRIDE

    @property
    def strides(self) -> tuple[int, ...]:
        """The levels the head reads, finest first: ``(8, 16)`` with the stride-8 level, else
        ``(stride,)``."""
        return (FINE_STRIDE, self.stride) if self.stride8_level else (self.stride,)

    @property
    def grid_size(self) -> int:
        """Cells per side of the coarsest level's grid."""
        return self.input_size // self.stride

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        keys = ("input_size", "head_hidden_channels", "neck_channels", "stride8_level", "level_split", "name")
        known = {k: data[k] for k in keys if k in data}
        config = cls(
            classes=tuple(data.get("classes", VOC_CLASSES)),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(data.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
            **known,
        )
        if "stride" in data and int(data["stride"]) != config.stride:
            raise ValueError(
                f"stride {data['stride']} does not match the architecture (stride {config.stride})"
            )
        if "levels" in data and tuple(int(s) for s in data["levels"]) != config.strides:
            raise ValueError(
                f"levels {list(data['levels'])} do not match the architecture (levels {list(config.strides)})"
            )
        return config


@dataclass(frozen=True)
class DetectParams:
    """Per-image post-processing parameters.

    ``class_ids`` restricts the output to those class ids; ``None`` keeps every class. ``flip``:
    flip test-time augmentation, the image and its mirror image through the network and each cell's
    boxes and scores averaged with its mirror cell's (twice the network's cost).
    """

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_ids: frozenset[int] | None = None
    flip: bool = False

    def with_overrides(
        self,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        class_ids: frozenset[int] | None = None,
        flip: bool | None = None,
    ) -> DetectParams:
        """These parameters with every value that is not ``None`` replaced (a request's own)."""
        return replace(
            self,
            score_threshold=self.score_threshold if score_threshold is None else score_threshold,
            iou_threshold=self.iou_threshold if iou_threshold is None else iou_threshold,
            max_detections=self.max_detections if max_detections is None else max_detections,
            class_ids=self.class_ids if class_ids is None else class_ids,
            flip=self.flip if flip is None else flip,
        )


def params_per_image(
    params: DetectParams | Sequence[DetectParams] | None, defaults: DetectParams, count: int
) -> list[DetectParams]:
    """One parameter set per image: ``params`` shared, or one each (their count checked), or
    ``defaults``."""
    if params is None:
        params = defaults
    per_image = [params] * count if isinstance(params, DetectParams) else list(params)
    if len(per_image) != count:
        raise ValueError(f"got {len(per_image)} parameter sets for {count} images")
    return per_image

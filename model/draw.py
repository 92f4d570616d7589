"""Drawing detections on images: one routine for TensorBoard, the predict command and the API."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from model.postprocess import Detections

# One stable colour per class id (20 VOC classes; wraps for more).
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def class_colour(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def draw_detections(image: Tensor, detections: Detections, classes: Sequence[str]) -> Tensor:
    """uint8 ``(3, H, W)`` image -> a copy with each box, its class name and score drawn."""
    if len(detections) == 0:
        return image.clone()
    labels = [
        f"{classes[int(c)]} {float(s):.2f}" for c, s in zip(detections.labels, detections.scores, strict=True)
    ]
    colours = [class_colour(int(c)) for c in detections.labels]
    width = max(1, round(max(image.shape[1:]) / 250))
    return draw_bounding_boxes(
        image, detections.boxes_xyxy.to(torch.float32), labels=labels, colors=colours, width=width
    )

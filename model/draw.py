"""Drawing detections on images: torchvision's boxes on tensors for TensorBoard and the predict
command, the same boxes drawn by Pillow on arrays for the API (which may have no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # importing this module must not import torch: the API draws without it
    from torch import Tensor

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


def _line_width(height: int, width: int) -> int:
    return max(1, round(max(height, width) / 250))


def draw_on_array(
    image: np.ndarray, boxes_xyxy: Any, scores: Any, labels: Any, classes: Sequence[str]
) -> Image.Image:
    """uint8 ``(H, W, 3)`` image and one image's detections (boxes ``(N, 4)`` xyxy original pixels,
    arrays or tensors) -> a Pillow image with each box, its class name and score drawn."""
    drawn = Image.fromarray(np.ascontiguousarray(image), "RGB")
    pen = ImageDraw.Draw(drawn)
    width = _line_width(image.shape[0], image.shape[1])
    rows = zip(
        np.asarray(boxes_xyxy).tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist(), strict=True
    )
    for (x1, y1, x2, y2), score, label in rows:
        colour = class_colour(int(label))
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        pen.text((x1 + width, y1 + width), f"{classes[int(label)]} {float(score):.2f}", fill=colour)
    return drawn


def draw_detections(image: Tensor, detections: Detections, classes: Sequence[str]) -> Tensor:
    """uint8 ``(3, H, W)`` image -> a copy with each box, its class name and score drawn."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    if len(detections) == 0:
        return image.clone()
    labels = [
        f"{classes[int(c)]} {float(s):.2f}" for c, s in zip(detections.labels, detections.scores, strict=True)
    ]
    colours = [class_colour(int(c)) for c in detections.labels]
    width = _line_width(int(image.shape[1]), int(image.shape[2]))
    return draw_bounding_boxes(
        image, detections.boxes_xyxy.to(torch.float32), labels=labels, colors=colours, width=width
    )

"""Box coding between the grid's raw ``tx, ty, tw, th`` and boxes in input pixels.

For the cell in column ``i``, row ``j`` with stride ``s``::

    x_c = s * (tanh(tx) + i + 0.5)    y_c = s * (tanh(ty) + j + 0.5)
    w   = s * exp(tw)                 h   = s * exp(th)

A cell is responsible for an object when the object's box centre falls in it.
:func:`encode_boxes` and :func:`decode_boxes` are exact inverses (up to float error).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert

from model.network import BOX_CHANNELS

# Keeps atanh finite; the target offset lies in [-0.5, 0.5) so this never clips real data.
_TANH_LIMIT = 1.0 - 1e-6


def cell_centres(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(H*W, 2)`` float ``(i + 0.5, j + 0.5)`` per cell, row-major (cell index ``j * W + i``)."""
    j, i = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([i.flatten(), j.flatten()], dim=1) + 0.5


def decode_boxes(deltas: Tensor, centres: Tensor, stride: int) -> Tensor:
    """deltas ``(..., 4)`` raw ``tx, ty, tw, th``; centres ``(..., 2)`` in cells -> xyxy input pixels."""
    xy = stride * (torch.tanh(deltas[..., :2]) + centres)
    wh = stride * torch.exp(deltas[..., 2:].clamp(max=10.0))
    return box_convert(torch.cat([xy, wh], dim=-1), "cxcywh", "xyxy")


def encode_boxes(boxes_xyxy: Tensor, centres: Tensor, stride: int) -> Tensor:
    """Inverse of :func:`decode_boxes`: boxes xyxy ``(..., 4)`` in input pixels -> raw ``tx, ty, tw, th``."""
    cxcywh = box_convert(boxes_xyxy, "xyxy", "cxcywh")
    offset = (cxcywh[..., :2] / stride - centres).clamp(-_TANH_LIMIT, _TANH_LIMIT)
    return torch.cat([torch.atanh(offset), torch.log(cxcywh[..., 2:] / stride)], dim=-1)


@dataclass(frozen=True)
class GridOutput:
    """The raw grid split and decoded; cells flattened row-major.

    boxes_xyxy: ``(B, H*W, 4)`` float, input pixels. objectness: ``(B, H*W)`` logits.
    class_logits: ``(B, H*W, C)``. deltas: ``(B, H*W, 4)`` raw box channels.
    """

    boxes_xyxy: Tensor
    objectness: Tensor
    class_logits: Tensor
    deltas: Tensor


def split_grid(raw: Tensor, stride: int) -> GridOutput:
    """raw ``(B, 5 + C, H, W)`` head output -> :class:`GridOutput` (decoded in float32)."""
    batch, _, height, width = raw.shape
    flat = raw.float().flatten(2).transpose(1, 2)  # (B, H*W, 5 + C)
    deltas = flat[..., :BOX_CHANNELS]
    centres = cell_centres(height, width, raw.device)
    return GridOutput(
        boxes_xyxy=decode_boxes(deltas, centres.expand(batch, -1, -1), stride),
        objectness=flat[..., BOX_CHANNELS],
        class_logits=flat[..., BOX_CHANNELS + 1 :],
        deltas=deltas,
    )


@dataclass(frozen=True)
class GridTargets:
    """Training targets on the grid, cells flattened row-major.

    positive: ``(B, H*W)`` bool, the responsible cells. deltas: ``(B, H*W, 4)`` raw box targets
    (meaningful where positive). labels: ``(B, H*W)`` long class ids, -1 where not positive.
    boxes_xyxy: ``(B, H*W, 4)`` the assigned boxes in input pixels.
    """

    positive: Tensor
    deltas: Tensor
    labels: Tensor
    boxes_xyxy: Tensor


def assign_targets(
    boxes_xyxy: list[Tensor], labels: list[Tensor], height: int, width: int, stride: int
) -> GridTargets:
    """Make grid targets from per-image boxes ``(N_i, 4)`` xyxy in input pixels and labels ``(N_i,)``.

    The cell that holds a box centre is responsible for it. When two centres share a cell the
    smaller box wins: large objects usually still reach a neighbouring cell, small ones do not.
    """
    batch = len(boxes_xyxy)
    device = boxes_xyxy[0].device if batch else torch.device("cpu")
    cells = height * width
    positive = torch.zeros(batch, cells, dtype=torch.bool, device=device)
    out_boxes = torch.zeros(batch, cells, 4, device=device)
    out_labels = torch.full((batch, cells), -1, dtype=torch.long, device=device)
    for b, (boxes, classes) in enumerate(zip(boxes_xyxy, labels, strict=True)):
        if boxes.numel() == 0:
            continue
        centre = (boxes[:, :2] + boxes[:, 2:]) / (2 * stride)
        col = centre[:, 0].floor().long().clamp(0, width - 1)
        row = centre[:, 1].floor().long().clamp(0, height - 1)
        index = row * width + col
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # Write largest first so that smaller boxes overwrite them in shared cells.
        order = torch.argsort(area, descending=True)
        for k in order.tolist():
            positive[b, index[k]] = True
            out_boxes[b, index[k]] = boxes[k]
            out_labels[b, index[k]] = classes[k]
    centres = cell_centres(height, width, device).expand(batch, -1, -1)
    safe_boxes = torch.where(
        positive[..., None], out_boxes, torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
    )
    deltas = encode_boxes(safe_boxes, centres, stride)
    return GridTargets(positive=positive, deltas=deltas, labels=out_labels, boxes_xyxy=out_boxes)

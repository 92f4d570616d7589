"""Box coding between the grid's raw ``tx, ty, tw, th`` and boxes in input pixels.

For the cell in column ``i``, row ``j`` with stride ``s``::

    x_c = s * (tanh(tx) + i + 0.5)    y_c = s * (tanh(ty) + j + 0.5)
    w   = s * exp(tw)                 h   = s * exp(th)

A cell is responsible for an object when the object's box centre falls in it; in training its
nearest neighbouring cells also learn the object (:func:`assign_targets`).
:func:`encode_boxes` and :func:`decode_boxes` are exact inverses (up to float error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert

from model.config import BOX_CHANNELS, MAX_LOG_SIZE
from model.grid import GridLayout, layout_of

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


def decode_boxes(deltas: Tensor, centres: Tensor, stride: int | Tensor) -> Tensor:
    """deltas ``(..., 4)`` raw ``tx, ty, tw, th``; centres ``(..., 2)`` in cells -> xyxy input pixels.
    ``stride``: one for every cell, or ``(..., 1)``, each cell's own."""
    xy = stride * (torch.tanh(deltas[..., :2]) + centres)
    wh = stride * torch.exp(deltas[..., 2:].clamp(max=MAX_LOG_SIZE))
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
    class_logits: ``(B, H*W, C)``. deltas: ``(B, H*W, 4)`` raw box channels. layout: where each
    cell sits (its level, row and column), every level's cells one after another.
    """

    boxes_xyxy: Tensor
    objectness: Tensor
    class_logits: Tensor
    deltas: Tensor
    layout: GridLayout


def layout_tensors(layout: GridLayout, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(N, 2)`` cell centres (in cells) and ``(N, 1)`` strides of ``layout`` on ``device``, made by
    torch (what :meth:`GridLayout.centres` gives in numpy), so that a compiled step traces them."""
    centres = torch.cat([cell_centres(height, width, device) for height, width in layout.shapes])
    strides = torch.cat(
        [
            torch.full((height * width, 1), float(stride), device=device)
            for stride, (height, width) in zip(layout.strides, layout.shapes, strict=True)
        ]
    )
    return centres, strides


def split_grid(raw: Tensor, strides: int | Sequence[int]) -> GridOutput:
    """raw head output -> :class:`GridOutput` (decoded in float32): ``(B, 5 + C, H, W)`` at one
    stride, or ``(B, 5 + C, N)`` of several levels (:mod:`model.grid`)."""
    batch = raw.shape[0]
    layout = layout_of(raw.shape, strides)
    flat = raw.float().flatten(2).transpose(1, 2)  # (B, N, 5 + C)
    deltas = flat[..., :BOX_CHANNELS]
    if len(layout.strides) == 1:
        (height, width), stride = layout.shapes[0], layout.strides[0]
        centres = cell_centres(height, width, raw.device)
        boxes = decode_boxes(deltas, centres.expand(batch, -1, -1), stride)
    else:
        centres, cell_stride = layout_tensors(layout, raw.device)
        boxes = decode_boxes(deltas, centres.expand(batch, -1, -1), cell_stride.expand(batch, -1, -1))
    return GridOutput(
        boxes_xyxy=boxes,
        objectness=flat[..., BOX_CHANNELS],
        class_logits=flat[..., BOX_CHANNELS + 1 :],
        deltas=deltas,
        layout=layout,
    )


@dataclass(frozen=True)
class GridTargets:
    """Training targets on the grid, cells flattened row-major.

    positive: ``(B, H*W)`` bool, the cells that train a box. deltas: ``(B, H*W, 4)`` raw box
    targets (meaningful where positive). labels: ``(B, H*W)`` long class ids, -1 where not
    positive. boxes_xyxy: ``(B, H*W, 4)`` the assigned boxes in input pixels ``(0, 0, 1, 1)``
    where not positive, so every cell holds a valid box.
    """

    positive: Tensor
    deltas: Tensor
    labels: Tensor
    boxes_xyxy: Tensor


def pad_boxes(boxes_xyxy: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-image boxes ``(N_i, 4)`` and labels ``(N_i,)`` -> padded ``(B, M, 4)`` and ``(B, M)`` (-1 pads)."""
    batch = len(boxes_xyxy)
    most = max((len(b) for b in boxes_xyxy), default=0)
    device = boxes_xyxy[0].device if batch else torch.device("cpu")
    out_boxes = torch.zeros(batch, most, 4, device=device)
    out_labels = torch.full((batch, most), -1, dtype=torch.long, device=device)
    for b, (boxes, classes) in enumerate(zip(boxes_xyxy, labels, strict=True)):
        out_boxes[b, : len(boxes)] = boxes
        out_labels[b, : len(classes)] = classes
    return out_boxes, out_labels


def assign_targets(
    boxes_xyxy: Tensor, labels: Tensor, height: int, width: int, stride: int, neighbours: bool = True
) -> GridTargets:
    """Grid targets from padded boxes ``(B, M, 4)`` xyxy input pixels and labels ``(B, M)`` (-1: padding).

    The cell holding a box centre trains it, and with ``neighbours`` so do the nearest
    horizontal and the nearest vertical cell (the centre lies within one cell of theirs, which
    ``tanh`` offsets reach). Where several boxes claim one cell, a box whose centre is in the cell
    wins over a neighbour's claim, then the smaller box wins. Vectorised: no per-box loop, no sync.
    """
    batch, most = labels.shape
    device = boxes_xyxy.device
    cells = height * width
    wh = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0)
    valid = (labels >= 0) & (wh > 0).all(-1)
    centre = (boxes_xyxy[..., :2] + boxes_xyxy[..., 2:]) / (2 * stride)  # (B, M, 2) in cells
    limit = torch.tensor([width - 1, height - 1], device=device)
    home = torch.minimum(centre.floor().clamp(min=0), limit).long()  # (B, M, 2) column, row
    candidates = [home]
    if neighbours:
        step = torch.where(centre - home < 0.5, -1, 1)
        candidates += [
            home + step * torch.tensor([1, 0], device=device),
            home + step * torch.tensor([0, 1], device=device),
        ]
    cand = torch.stack(candidates, dim=2)  # (B, M, K, 2)
    kinds = cand.shape[2]
    inside = ((cand >= 0) & (cand <= limit)).all(-1) & valid[..., None]  # (B, M, K)
    cell = (cand[..., 1] * width + cand[..., 0]).clamp(0, cells - 1)
    # One int64 key per claim: [neighbour claim][area][claim index]; the smallest key wins its cell.
    index_bits = max(1, (most * kinds - 1).bit_length())
    area = (wh[..., 0] * wh[..., 1]).round().long().clamp(0, (1 << 40) - 1)
    claim = torch.arange(most * kinds, device=device).view(most, kinds)
    is_neighbour = (torch.arange(kinds, device=device) > 0).long()
    key = (is_neighbour << (40 + index_bits)) | (area[..., None] << index_bits) | claim
    never = torch.iinfo(torch.long).max
    key = torch.where(inside, key, never)
    best = torch.full((batch, cells), never, dtype=torch.long, device=device)
    best.scatter_reduce_(1, cell.flatten(1), key.flatten(1), reduce="amin")
    positive = best != never
    box_index = torch.where(positive, (best & ((1 << index_bits) - 1)) // kinds, 0)
    out_boxes = (
        boxes_xyxy.gather(1, box_index[..., None].expand(-1, -1, 4))
        if most
        else torch.zeros(batch, cells, 4, device=device)
    )
    out_labels = (
        labels.gather(1, box_index) if most else torch.zeros(batch, cells, dtype=torch.long, device=device)
    )
    out_boxes = torch.where(positive[..., None], out_boxes, torch.tensor([0.0, 0.0, 1.0, 1.0], device=device))
    out_labels = torch.where(positive, out_labels, -1)
    centres = cell_centres(height, width, device).expand(batch, -1, -1)
    deltas = encode_boxes(out_boxes, centres, stride)
    return GridTargets(positive=positive, deltas=deltas, labels=out_labels, boxes_xyxy=out_boxes)


def assign_levels(
    boxes_xyxy: Tensor,
    labels: Tensor,
    layout: GridLayout,
    level_split: float,
    neighbours: bool = True,
) -> GridTargets:
    """:func:`assign_targets` over every level of ``layout``, the levels' cells concatenated as the
    network gives them. With two levels an object trains the finer one when the square root of its
    area (input pixels) is under ``level_split``, else the coarser one; never both."""
    if len(layout.strides) == 1:
        height, width = layout.shapes[0]
        return assign_targets(boxes_xyxy, labels, height, width, layout.strides[0], neighbours)
    if len(layout.strides) != 2:
        raise ValueError(f"level assignment splits two levels, not {len(layout.strides)}")
    wh = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0)
    small = (wh[..., 0] * wh[..., 1]).sqrt() < level_split
    parts = [
        assign_targets(boxes_xyxy, torch.where(chosen, labels, -1), side, side, stride, neighbours)
        for chosen, side, stride in zip((small, ~small), layout.sides, layout.strides, strict=True)
    ]
    return GridTargets(
        positive=torch.cat([p.positive for p in parts], dim=1),
        deltas=torch.cat([p.deltas for p in parts], dim=1),
        labels=torch.cat([p.labels for p in parts], dim=1),
        boxes_xyxy=torch.cat([p.boxes_xyxy for p in parts], dim=1),
    )

"""Post-processing in numpy: raw grid -> scored, thresholded, NMS-filtered boxes in original pixels.

The same rules, in the same order, as the torch path (:func:`model.boxes.split_grid`,
:func:`model.postprocess.postprocess`): the seed's box decoding, sigmoid(objectness) x
softmax(classes), the threshold and class filter, the top :data:`PRE_NMS_TOP_K` candidates,
the mapping to original pixels, and class-aware greedy NMS (torchvision's coordinate-offset rule),
all in float32; with the card's calibration applied to the scores first, as there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.calibration import Calibration
from model.config import BOX_CHANNELS, MAX_LOG_SIZE, PRE_NMS_TOP_K, DetectParams
from model.geometry import Letterbox
from model.grid import layout_of

_MAX_LOG_SIZE = np.float32(MAX_LOG_SIZE)


@dataclass(frozen=True)
class ArrayDetections:
    """Detections of one image, sorted by score (highest first), as numpy arrays.

    boxes_xyxy: ``(N, 4)`` float32 in original-image pixels, ``0 <= x1 < x2 <= W``,
    ``0 <= y1 < y2 <= H``. scores: ``(N,)`` float32 in [0, 1]. labels: ``(N,)`` int64 class ids.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.size)


def decode_grid(raw: np.ndarray, strides: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """raw head output, ``(B, 5 + C, H, W)`` at one stride or ``(B, 5 + C, N)`` of several levels
    (:mod:`model.grid`) -> boxes ``(B, N, 4)`` xyxy input pixels and scores ``(B, N, C)``; cells
    flattened row-major (cell ``j * W + i``), level after level."""
    layout = layout_of(raw.shape, strides)
    batch, channels = raw.shape[:2]
    flat = raw.astype(np.float32, copy=False).reshape(batch, channels, layout.cells).transpose(0, 2, 1)
    centres = layout.centres()  # (N, 2) in cells
    s: np.ndarray | np.float32 = (
        np.float32(layout.strides[0]) if len(layout.strides) == 1 else layout.cell_strides()
    )
    xy = s * (np.tanh(flat[..., :2]) + centres)
    wh = s * np.exp(np.minimum(flat[..., 2:BOX_CHANNELS], _MAX_LOG_SIZE))
    half = np.float32(0.5) * wh
    boxes = np.concatenate([xy - half, xy + half], axis=-1)
    objectness = np.float32(1.0) / (np.float32(1.0) + np.exp(-flat[..., BOX_CHANNELS]))
    logits = flat[..., BOX_CHANNELS + 1 :]
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores = objectness[..., None] * (exp / exp.sum(axis=-1, keepdims=True))
    return boxes, scores


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, highest score first, at most ``limit`` of them; a
    box is dropped when its IoU with a kept one is over ``iou_threshold``."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes_xyxy[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(scores), dtype=bool)
    keep: list[int] = []
    threshold = np.float32(iou_threshold)
    for position, index in enumerate(order):
        if suppressed[index]:
            continue
        keep.append(int(index))
        if len(keep) == limit:
            break
        rest = order[position + 1 :]
        width = np.maximum(np.minimum(x2[index], x2[rest]) - np.maximum(x1[index], x1[rest]), 0)
        height = np.maximum(np.minimum(y2[index], y2[rest]) - np.maximum(y1[index], y1[rest]), 0)
        inter = width * height
        suppressed[rest[inter / (areas[index] + areas[rest] - inter) > threshold]] = True
    return np.array(keep, dtype=np.int64)


def postprocess_image(
    boxes_xyxy: np.ndarray, scores: np.ndarray, placement: Letterbox, params: DetectParams
) -> ArrayDetections:
    """One image: boxes ``(K, 4)`` in input pixels and scores ``(K, C)`` -> :class:`ArrayDetections`."""
    keep = scores >= np.float32(params.score_threshold)  # (K, C)
    if params.class_ids is not None:
        keep_class = np.zeros(scores.shape[1], dtype=bool)
        keep_class[list(params.class_ids)] = True
        keep &= keep_class
    cell, label = np.nonzero(keep)
    candidate_scores = scores[cell, label]
    if candidate_scores.size > PRE_NMS_TOP_K:
        top = np.argsort(-candidate_scores, kind="stable")[:PRE_NMS_TOP_K]
        cell, label, candidate_scores = cell[top], label[top], candidate_scores[top]
    boxes = placement.to_original_array(boxes_xyxy[cell])
    # Boxes entirely in the letterbox border collapse to nothing once clipped.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, label, candidate_scores = boxes[valid], label[valid].astype(np.int64), candidate_scores[valid]
    if boxes.size:  # classes apart: each class's boxes shifted past every other's (torchvision's rule)
        offsets = label.astype(np.float32) * (boxes.max() + np.float32(1.0))
        kept = nms(boxes + offsets[:, None], candidate_scores, params.iou_threshold, params.max_detections)
    else:
        kept = np.zeros(0, dtype=np.int64)
    return ArrayDetections(
        boxes_xyxy=boxes[kept].astype(np.float32),
        scores=candidate_scores[kept].astype(np.float32),
        labels=label[kept],
    )


def postprocess(
    raw: np.ndarray,
    strides: int | Sequence[int],
    placements: Sequence[Letterbox],
    params: Sequence[DetectParams],
    calibration: Calibration | None = None,
) -> list[ArrayDetections]:
    """A batch of raw grids: each image with its own letterbox placement and its own parameters,
    the mirror images that ``params[b].flip`` asked for after them; scores calibrated before the
    threshold when there is a calibration."""
    boxes, scores = decode_grid(raw, strides)
    flipped = [b for b, p in enumerate(params) if p.flip]
    if flipped:  # their mirror images follow the batch (model.postprocess.merge_flips)
        own = len(params)
        layout = layout_of(raw.shape, strides)
        order = layout.mirror_order()
        size = np.float32(layout.input_size)
        back = boxes[own:, order][..., [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32)
        back += np.array([size, 0, size, 0], np.float32)
        back_scores = scores[own:, order]
        boxes, scores = boxes[:own].copy(), scores[:own].copy()
        boxes[flipped] = (boxes[flipped] + back) / np.float32(2)
        scores[flipped] = (scores[flipped] + back_scores) / np.float32(2)
    if calibration is not None:
        scores = calibration.apply_array(scores)
    return [postprocess_image(boxes[b], scores[b], placements[b], params[b]) for b in range(len(placements))]

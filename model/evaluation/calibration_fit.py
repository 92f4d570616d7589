"""Fitting and checking a score calibration on held-out detections (:mod:`model.calibration`).

The images of a split are halved by position (even positions fit, odd ones check), so the
calibration error is always measured on images the map was not fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.calibration import (
    MIN_DETECTIONS,
    Calibration,
    expected_calibration_error,
    fit_knots,
    fit_platt,
    platt_knots,
)
from model.evaluation.ap import ImageGroundTruth, class_matches
from model.postprocess import Detections


def matched(
    detections: Sequence[Detections], truths: Sequence[ImageGroundTruth], class_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """One class's detection scores and whether each found an object (VOC matching at IoU 0.5)."""
    scores, hits, _ = class_matches(detections, truths, class_id)
    return np.asarray(scores, dtype=np.float32), np.asarray(hits, dtype=np.float32)


@dataclass(frozen=True)
class FittedCalibration:
    knots: dict[str, tuple[list[float], list[float]]]
    pooled: dict[str, bool]  # the class used the map fitted on every class (too few of its own)
    detections: dict[str, int]  # held-out detections each class's map was fitted on

    def calibration(self, classes: Sequence[str]) -> Calibration:
        return Calibration.from_knots([self.knots[name] for name in classes])

    def card_block(self) -> dict[str, object]:
        return {
            name: {"x": x, "y": y, "detections": self.detections[name], "pooled": self.pooled[name]}
            for name, (x, y) in self.knots.items()
        }


def fit(
    detections: Sequence[Detections],
    truths: Sequence[ImageGroundTruth],
    classes: Sequence[str],
    method: str = "isotonic",
    min_detections: int = MIN_DETECTIONS,
) -> FittedCalibration:
    """A map per class (``isotonic`` or ``platt``), from that class's detections where it has
    ``min_detections`` of them, else the map of every class's detections together."""

    def knots_of(scores: np.ndarray, hits: np.ndarray) -> tuple[list[float], list[float]]:
        return fit_knots(scores, hits) if method == "isotonic" else platt_knots(*fit_platt(scores, hits))

    per_class = [matched(detections, truths, k) for k in range(len(classes))]
    every = (np.concatenate([s for s, _ in per_class]), np.concatenate([h for _, h in per_class]))
    pooled_knots = knots_of(*every)
    knots, pooled, counts = {}, {}, {}
    for name, (scores, hits) in zip(classes, per_class, strict=True):
        own = len(scores) >= min_detections and hits.any()
        knots[name] = knots_of(scores, hits) if own else pooled_knots
        pooled[name], counts[name] = not own, len(scores)
    return FittedCalibration(knots, pooled, counts)


def reliability(
    detections: Sequence[Detections],
    truths: Sequence[ImageGroundTruth],
    classes: Sequence[str],
    calibration: Calibration | None,
    bins: int = 10,
) -> dict[str, object]:
    """Every class's detections together, their scores through ``calibration`` (raw if None): the
    expected calibration error (and its mean over the classes), and per score bin the mean
    score, hit rate and count."""
    scores, hits, per_class = [], [], []
    for k in range(len(classes)):
        raw, hit = matched(detections, truths, k)
        if calibration is not None and len(raw):
            column = np.zeros((len(raw), len(classes)), dtype=np.float32)
            column[:, k] = raw
            raw = calibration.apply_array(column)[:, k]
        scores.append(raw)
        hits.append(hit)
        if len(raw):
            per_class.append(expected_calibration_error(raw, hit, bins))
    s, h = np.concatenate(scores), np.concatenate(hits)
    which = np.minimum((s * bins).astype(int), bins - 1)
    table = [
        {
            "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
            "detections": int((which == b).sum()),
            "mean_score": round(float(s[which == b].mean()), 4) if (which == b).any() else None,
            "hit_rate": round(float(h[which == b].mean()), 4) if (which == b).any() else None,
        }
        for b in range(bins)
    ]
    return {
        "ece": round(expected_calibration_error(s, h, bins), 4),
        "classwise_ece": round(float(np.mean(per_class)), 4) if per_class else 0.0,
        "detections": len(s),
        "bins": table,
    }


def halves(count: int) -> tuple[list[int], list[int]]:
    """Image positions that fit (even) and that check (odd)."""
    return list(range(0, count, 2)), list(range(1, count, 2))


def calibrated_detections(
    found: Sequence[Detections], calibration: Calibration, classes: int
) -> list[Detections]:
    """``found`` with each score through ``calibration`` (their order within a class unchanged)."""
    out = []
    for det in found:
        column = np.zeros((len(det), classes), dtype=np.float32)
        column[np.arange(len(det)), det.labels.numpy()] = det.scores.numpy()
        mapped = calibration.apply_array(column)[np.arange(len(det)), det.labels.numpy()]
        out.append(Detections(det.boxes_xyxy, torch.from_numpy(mapped.astype(np.float32)), det.labels))
    return out

"""Scores that mean precision: a per-class monotone map from the network's score to the share of
detections at that score that find an object, fitted on held-out detections (``python -m
model.calibrate``), stored in the card, applied in post-processing by both runtimes.

The map is isotonic (pool-adjacent-violators, each block's rate smoothed by Laplace's rule)
through the blocks' mean scores, a hair of the raw
score added so that it rises strictly: within a class the order of detections never changes, so
NMS keeps the same boxes and AP is unchanged (up to the threshold's cut at the low end). It is
applied through one table per class (:data:`GRID` steps, linear between them), the same arithmetic
in numpy and in torch. Nothing here imports torch at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CARD_KEY = "calibration"
GRID = 1025  # table steps over [0, 1]
_RAW_SHARE = 1e-4  # the raw score's share: strictly rising, calibrated values move by at most this
MIN_DETECTIONS = 200  # a class with fewer held-out detections uses the map fitted on all classes
_KNOTS = 24  # knots kept per class (the blocks merged down to about this many)


def pool_adjacent_violators(
    scores: np.ndarray, hits: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted isotonic regression of ``hits`` on ``scores``: the blocks' mean scores (rising),
    their weighted hit rates (strictly rising) and their weights."""
    order = np.argsort(scores, kind="stable")
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    means: list[float] = []
    rates: list[float] = []
    sizes: list[float] = []
    for score, hit, size in zip(scores[order].tolist(), hits[order].tolist(), w[order].tolist(), strict=True):
        means.append(score)
        rates.append(hit)
        sizes.append(size)
        while len(rates) > 1 and rates[-2] >= rates[-1]:  # merge a violating pair (and equal ones)
            n = sizes[-2] + sizes[-1]
            means[-2] = (means[-2] * sizes[-2] + means[-1] * sizes[-1]) / n
            rates[-2] = (rates[-2] * sizes[-2] + rates[-1] * sizes[-1]) / n
            sizes[-2] = n
            del means[-1], rates[-1], sizes[-1]
    return np.array(means), np.array(rates), np.array(sizes)


def fit_knots(scores: np.ndarray, hits: np.ndarray) -> tuple[list[float], list[float]]:
    """The knots ``(x, y)`` of one class's map: isotonic block means, thinned to about
    :data:`_KNOTS` evenly over the blocks, anchored at ``(0, 0)``."""
    x, y, n = pool_adjacent_violators(scores, hits)
    # A block's rate with one hit and one miss added (Laplace's rule), pooled again where that
    # breaks the order: a top block of 20 right out of 20 says 0.95, not 1.0.
    x, y, _ = pool_adjacent_violators(x, (y * n + 1) / (n + 2), n + 2)
    if len(x) > _KNOTS:
        keep = np.unique(np.linspace(0, len(x) - 1, _KNOTS).round().astype(int))
        x, y = x[keep], y[keep]
    if x[0] > 0:
        x, y = np.concatenate([[0.0], x]), np.concatenate([[0.0], y])
    return [round(float(v), 6) for v in x], [round(float(v), 6) for v in y]


def fit_platt(scores: np.ndarray, hits: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` of ``sigmoid(a * logit(score) + b)`` fitted to ``hits`` by Newton's
    method on the log-loss (a slope kept positive, so the map rises)."""
    logit = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / np.clip(1 - scores, 1e-6, 1.0)).astype(np.float64)
    features = np.stack([logit, np.ones_like(logit)], axis=1)
    params = np.array([1.0, 0.0])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(features @ params)))
        gradient = features.T @ (p - hits)
        hessian = (features * (p * (1 - p))[:, None]).T @ features + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.abs(step).max() < 1e-8:
            break
    return max(float(params[0]), 1e-3), float(params[1])


def platt_knots(a: float, b: float) -> tuple[list[float], list[float]]:
    """The knots of a Platt map, dense at the low scores where most detections are."""
    x = np.unique(np.concatenate([[0.0], np.geomspace(1e-3, 1.0, _KNOTS * 2)]))
    inner = np.clip(x, 1e-6, 1 - 1e-6)
    y = 1 / (1 + np.exp(-(a * np.log(inner / (1 - inner)) + b)))
    y[0] = 0.0
    return [round(float(v), 6) for v in x], [round(float(v), 6) for v in y]


@dataclass(frozen=True)
class Calibration:
    """Per-class score maps as tables: ``table[c, k]`` is class ``c``'s calibrated score at raw
    score ``k / (GRID - 1)``."""

    table: np.ndarray  # (C, GRID) float32, strictly rising along each row
    _on_device: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_knots(cls, knots: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Calibration:
        grid = np.linspace(0.0, 1.0, GRID)
        rows = [
            (1 - _RAW_SHARE) * np.interp(grid, np.asarray(x), np.asarray(y)) + _RAW_SHARE * grid
            for x, y in knots
        ]
        return cls(np.clip(np.stack(rows), 0.0, 1.0).astype(np.float32))

    @classmethod
    def from_card(cls, card: dict[str, Any], classes: Sequence[str]) -> Calibration | None:
        """The card's calibration, or None when it has none (weights from before calibration)."""
        block = card.get(CARD_KEY)
        if not block:
            return None
        per_class = block["classes"]
        return cls.from_knots([(per_class[name]["x"], per_class[name]["y"]) for name in classes])

    def apply_array(self, scores: np.ndarray) -> np.ndarray:
        """``(..., C)`` float32 raw scores -> calibrated, the same shape."""
        position = np.clip(scores, 0.0, 1.0) * np.float32(GRID - 1)
        low = np.clip(np.floor(position), 0, GRID - 2)
        fraction = (position - low).astype(np.float32)
        index = low.astype(np.int64)
        columns = np.arange(self.table.shape[0])
        below = self.table[columns, index]
        above = self.table[columns, index + 1]
        return below + (above - below) * fraction

    def apply_tensor(self, scores: Any) -> Any:
        """The same for a torch tensor (on its device)."""
        import torch

        table = self._on_device.get(str(scores.device))
        if table is None:  # once per device, not once per batch
            table = self._on_device[str(scores.device)] = torch.as_tensor(self.table, device=scores.device)
        position = scores.float().clamp(0.0, 1.0) * (GRID - 1)
        low = position.floor().clamp(0, GRID - 2)
        fraction = position - low
        index = low.long()
        columns = torch.arange(table.shape[0], device=scores.device).expand_as(index)
        below = table[columns, index]
        above = table[columns, index + 1]
        return below + (above - below) * fraction


def expected_calibration_error(scores: np.ndarray, hits: np.ndarray, bins: int = 10) -> float:
    """The detections' mean gap between score and hit rate over ``bins`` equal-width score bins,
    weighted by the detections in each."""
    if not len(scores):
        return 0.0
    which = np.minimum((scores * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.sum() * abs(float(scores[inside].mean()) - float(hits[inside].mean()))
    return gap / len(scores)

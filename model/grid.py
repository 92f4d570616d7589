"""Where each cell of the head's output sits: one square grid per level, cells flattened.

A one-level network gives ``(B, 5 + C, H, W)``; a network with several levels gives
``(B, 5 + C, N)``, each level's grid flattened row-major (cell ``j * W + i``) and the levels
concatenated finest first (:attr:`model.config.DetectorConfig.strides`). The served input is
square, so every level's grid is too, and the cell count alone says the input's side. Both prediction paths
(torch and numpy) and training read the layout from here. numpy only: the torch-free path
imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class GridLayout:
    """The cells of every level: ``shapes[k]`` (rows, columns) at ``strides[k]``."""

    strides: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]

    @property
    def sides(self) -> tuple[int, ...]:
        """Columns per level (the side of a square level)."""
        return tuple(width for _, width in self.shapes)

    @property
    def input_size(self) -> int:
        """The input's width in pixels (its side: the served input is square)."""
        return self.strides[0] * self.shapes[0][1]

    @property
    def cells(self) -> int:
        return sum(height * width for height, width in self.shapes)

    def slices(self) -> list[slice]:
        """Each level's cells in the flattened output."""
        out, start = [], 0
        for height, width in self.shapes:
            out.append(slice(start, start + height * width))
            start += height * width
        return out

    def centres(self) -> np.ndarray:
        """``(N, 2)`` float32 ``(i + 0.5, j + 0.5)`` of each cell, in its own level's cells."""
        return _centres(self.shapes)

    def cell_strides(self) -> np.ndarray:
        """``(N, 1)`` float32: the stride of each cell's level."""
        return np.concatenate(
            [
                np.full((h * w, 1), stride, np.float32)
                for stride, (h, w) in zip(self.strides, self.shapes, strict=True)
            ]
        )

    def mirror_order(self) -> np.ndarray:
        """``(N,)`` int64: for each cell, the index of its mirror cell (column ``i -> W - 1 - i``,
        same level, same row), for flip test-time augmentation."""
        parts = [
            np.arange(part.start, part.stop).reshape(shape)[:, ::-1].ravel()
            for part, shape in zip(self.slices(), self.shapes, strict=True)
        ]
        return np.concatenate(parts).astype(np.int64)


@lru_cache(maxsize=64)
def _centres(shapes: tuple[tuple[int, int], ...]) -> np.ndarray:
    parts = []
    for height, width in shapes:
        j, i = np.meshgrid(
            np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij"
        )
        parts.append(np.stack([i.ravel(), j.ravel()], axis=1))
    centres = np.concatenate(parts) + np.float32(0.5)
    centres.setflags(write=False)
    return centres


def layout_of(shape: Sequence[int], strides: int | Sequence[int]) -> GridLayout:
    """The layout of a raw output of ``shape``: ``(B, 5 + C, H, W)`` for one level or
    ``(B, 5 + C, N)`` for ``strides`` of several (their cell count must fit a square input)."""
    strides = (strides,) if isinstance(strides, int) else tuple(strides)
    if len(shape) == 4:
        if len(strides) != 1:
            raise ValueError(f"a (B, C, H, W) output is one level, not {len(strides)} at {list(strides)}")
        return GridLayout(strides, ((int(shape[2]), int(shape[3])),))
    if len(shape) != 3:
        raise ValueError(f"expected a (B, C, H, W) or (B, C, N) output, got shape {tuple(shape)}")
    cells = int(shape[2])
    # N = sum((S / s)^2) over the levels, so S = sqrt(N / sum(1 / s^2)).
    coarsest = max(strides)
    per_coarse_cell = sum((coarsest // stride) ** 2 for stride in strides)
    coarse_side = math.isqrt(cells // per_coarse_cell)
    sides = [coarse_side * coarsest // stride for stride in strides]
    layout = GridLayout(strides, tuple((side, side) for side in sides))
    if layout.cells != cells or any(coarsest % stride for stride in strides):
        raise ValueError(f"{cells} cells do not make square grids at strides {list(strides)}")
    return layout

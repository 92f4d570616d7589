"""Tiny random-init weights folders for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from model.checkpoint import save_weights
from model.config import VOC_CLASSES, DetectorConfig
from model.network import build_network

TINY_SIZE = 64


def make_weights(
    folder: Path,
    input_size: int = TINY_SIZE,
    objectness_bias: float | None = None,
    classes: Sequence[str] = VOC_CLASSES,
) -> Path:
    """A random-init weights folder; ``objectness_bias`` raises scores so detections appear
    (mostly ``person``, then ``dog``: their class logits are raised too)."""
    torch.manual_seed(0)
    network = build_network(DetectorConfig(classes=tuple(classes), input_size=input_size))
    if objectness_bias is not None:
        with torch.no_grad():
            network.head[-1].bias[4] = objectness_bias
            if len(classes) > 14:
                network.head[-1].bias[5 + 14] = 4.0
                network.head[-1].bias[5 + 11] = 3.0
    return save_weights(folder, network, {"note": "random weights made by the tests"})

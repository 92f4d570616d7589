"""The optimiser and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of the schedule, then cosine decay to 0.02."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    done = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * done))


def make_optimizer(
    network: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA; no weight decay on norms and biases. Every parameter is in a group,
    frozen or not, so that unfreezing later needs no new optimiser."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in network.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=device.type == "cuda",
    )

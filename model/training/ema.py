"""An exponential moving average of a network's weights, used for validation and export."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * model`` after every optimizer step.

    The decay ramps up from 0 as ``decay * (1 - exp(-updates / warmup))``, so early on the average
    follows the fast-moving weights instead of remembering the random init. BatchNorm running
    statistics are averaged too; integer buffers are copied.
    """

    def __init__(self, network: nn.Module, decay: float = 0.9995, warmup: float = 1000.0) -> None:
        self.module = copy.deepcopy(network).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.warmup))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        source = network.state_dict()
        floats_ema, floats_src = [], []
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                floats_ema.append(value)
                floats_src.append(source[name].detach())
            else:
                value.copy_(source[name])
        torch._foreach_lerp_(floats_ema, floats_src, weight)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])

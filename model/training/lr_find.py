"""The learning-rate range test: raise the LR exponentially each step, plot the smoothed loss."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from model.training.optim import make_optimizer


def find_lr(
    network: nn.Module,
    loss_fn: Callable[[Tensor], Tensor],
    images: int,
    batch_size: int,
    weight_decay: float,
    device: torch.device,
    out: Path,
    steps: int = 100,
    generator: torch.Generator | None = None,
    lr_min: float = 1e-6,
    lr_max: float = 1.0,
) -> float:
    """Run the test with ``loss_fn(indices)`` on random batches; write ``lr_find.png`` and ``.json``.

    The suggestion is the LR where the smoothed loss falls fastest, the usual reading of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizer = make_optimizer(network, lr_min, weight_decay, device)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed, best = 0.0, math.inf
    for step in tqdm(range(steps), desc="find-lr"):
        lr = lr_min * (lr_max / lr_min) ** (step / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = torch.randint(0, images, (min(batch_size, images),), generator=generator, device=device)
        loss = loss_fn(indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        smoothed = 0.9 * smoothed + 0.1 * value if step else value
        debiased = smoothed / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(debiased)
        best = min(best, debiased)
        if not math.isfinite(value) or debiased > 4 * best:
            break
    # Steepest descent of the smoothed loss against log(lr), ignoring the last tenth (divergence).
    usable = max(3, int(len(losses) * 0.9))
    slopes = [
        (losses[k + 1] - losses[k - 1]) / (math.log(lrs[k + 1]) - math.log(lrs[k - 1]))
        for k in range(1, min(usable, len(losses) - 1))
    ]
    suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)] if slopes else lrs[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lr_find.png", dpi=100)
    (out / "lr_find.json").write_text(json.dumps({"suggested_lr": suggestion, "lr": lrs, "loss": losses}))
    print(f"suggested learning rate {suggestion:.3e}; plot {out / 'lr_find.png'}")
    return suggestion

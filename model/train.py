"""Train the grid detector on VOC folders.

    python -m model.train --data VOCDEVKIT --train-split train --val-split val --out runs/NAME

Shows progress, logs every loss term, the learning rate, val mAP and a few val images with
their predicted boxes to TensorBoard under ``--out``, keeps ``best.pt`` (by val mAP) and
``last.pt``, resumes with ``--resume``, exports with ``--export DIR``. ``--find-lr`` runs the
learning-rate range test instead. Under ``torchrun`` it trains with DDP on every process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from model.boxes import assign_targets, split_grid
from model.checkpoint import load_weights, save_weights
from model.config import DetectorConfig, DetectParams
from model.data import TrainTransform, VOCDetection, collate_train
from model.draw import draw_detections
from model.evaluate import EvaluationReport, evaluate_predictor, format_table
from model.loss import detection_loss
from model.network import GridDetector, build_network
from model.predictor import Predictor, resolve_device


class NonFiniteLossError(RuntimeError):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", action="append", required=True, help="VOCdevkit folder; repeat for several")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, plots")
    p.add_argument("--input-size", type=int, default=416)
    p.add_argument("--head-hidden-channels", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone-weights", default=None, help="local torchvision ResNet18 state dict")
    p.add_argument("--resume", default=None, help="a last.pt/best.pt checkpoint to continue from")
    p.add_argument("--export", default=None, help="export the best checkpoint to this weights folder")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between val evaluations")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N train images")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N val images")
    p.add_argument("--find-lr", action="store_true", help="run the LR range test instead of training")
    p.add_argument("--find-lr-steps", type=int, default=100)
    p.add_argument("--log-images", type=int, default=4, help="val images drawn to TensorBoard")
    return p.parse_args(argv)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """DDP when launched by torchrun (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return Distributed(dist.get_rank(), world_size, local_rank), device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores (torch {torch.__version__})"


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(network: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and biases."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in network.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )


def compute_loss(
    network: nn.Module,
    images: Tensor,
    targets: list[dict[str, Tensor]],
    config: DetectorConfig,
    autocast: Any,
) -> dict[str, Tensor]:
    with autocast:
        raw = network(images)  # (B, 5 + C, S/32, S/32)
    output = split_grid(raw, config.stride)
    grid = assign_targets(
        [t["boxes"] for t in targets],
        [t["labels"] for t in targets],
        raw.shape[2],
        raw.shape[3],
        config.stride,
    )
    return detection_loss(output, grid)


def move_targets(targets: list[dict[str, Tensor]], device: torch.device) -> list[dict[str, Tensor]]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def bare_network(network: nn.Module) -> GridDetector:
    inner = network.module if isinstance(network, DistributedDataParallel) else network
    assert isinstance(inner, GridDetector)
    return inner


def run_validation(
    network: GridDetector,
    val_set: VOCDetection,
    device: torch.device,
    args: argparse.Namespace,
    limit: int | None,
) -> EvaluationReport:
    # float32 so that validating never changes the training network's dtype.
    predictor = Predictor(network, device, dtype=torch.float32)
    try:
        return evaluate_predictor(
            predictor, val_set, batch_size=args.batch_size, workers=args.workers, progress=False, limit=limit
        )
    finally:
        network.train()


def log_val_images(
    writer: Any, network: GridDetector, val_set: VOCDetection, device: torch.device, count: int, step: int
) -> None:
    predictor = Predictor(network, device, dtype=torch.float32)
    try:
        for k in range(min(count, len(val_set))):
            image, _ = val_set[k]
            found = predictor(image, DetectParams(score_threshold=0.2))[0]
            writer.add_image(f"val/{k}", draw_detections(image, found, network.config.classes), step)
    finally:
        network.train()


def find_lr(
    args: argparse.Namespace,
    network: nn.Module,
    loader: DataLoader,
    config: DetectorConfig,
    device: torch.device,
    autocast: Any,
    out: Path,
) -> float:
    """LR range test: raise the LR exponentially each step, record the smoothed loss, plot it.

    The suggestion is the LR where the smoothed loss falls fastest, the usual reading of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lr_min, lr_max, steps = 1e-6, 1.0, args.find_lr_steps
    optimizer = make_optimizer(network, lr_min, args.weight_decay)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed, best = 0.0, math.inf
    batches = iter(loader)
    for step in tqdm(range(steps), desc="find-lr"):
        lr = lr_min * (lr_max / lr_min) ** (step / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            images, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets = next(batches)
        loss = compute_loss(network, images.to(device), move_targets(targets, device), config, autocast)[
            "total"
        ]
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


def export(
    checkpoint_path: Path,
    export_dir: Path,
    val_set: VOCDetection | None,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Write the checkpoint's weights (fp16) with a card, then evaluate the exported files.

    The card's mAP is measured on the exported weights through the serving predictor, so
    ``python -m model.evaluate`` on the same split gives the same figures.
    """
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    config = DetectorConfig.from_dict(state["config"])
    network = build_network(config)
    network.load_state_dict(state["model"])
    card: dict[str, Any] = {
        **state["card"],
        "checkpoint_epoch": state["epoch"],
        "exported_from": str(checkpoint_path),
    }
    save_weights(export_dir, network, card)
    if val_set is not None:
        loaded = load_weights(export_dir, expected_classes=config.classes)
        predictor = Predictor(loaded.network, device, backend="auto")  # as the service runs it
        report = evaluate_predictor(
            predictor, val_set, batch_size=args.batch_size, workers=args.workers, progress=False
        )
        card["val"] = {
            "split": args.val_split,
            "images": report.images,
            "map50": round(report.result.map50, 6),
            "ap50_per_class": {k: None if v is None else round(v, 6) for k, v in report.result.ap.items()},
            "evaluated_on": f"{predictor.device} {str(predictor.dtype).removeprefix('torch.')}",
            "metric": "VOC all-point AP at IoU 0.5, difficult ignored",
        }
        meta = json.loads((export_dir / "model.json").read_text())
        meta["card"] = card
        (export_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(format_table(report.result))
    print(f"exported {checkpoint_path} -> {export_dir}")
    return card


def train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    dist_info, device = setup_distributed(args.device)
    seed_everything(args.seed + dist_info.rank)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    resume_state = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    if resume_state is not None:
        config = DetectorConfig.from_dict(resume_state["config"])
    else:
        config = DetectorConfig(input_size=args.input_size, head_hidden_channels=args.head_hidden_channels)

    train_set = VOCDetection(
        args.data,
        args.train_split,
        TrainTransform(config.input_size, not args.no_augment),
        classes=config.classes,
    )
    train_data: VOCDetection | Subset[Any] = train_set
    if args.limit_train:
        train_data = Subset(train_set, range(min(args.limit_train, len(train_set))))
    val_set = VOCDetection(args.data, args.val_split, classes=config.classes) if args.val_split else None
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(train_data, seed=args.seed) if dist_info.world_size > 1 else None
    )
    loader = DataLoader(
        train_data,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate_train,
        drop_last=len(train_data) > args.batch_size,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )

    network: nn.Module = build_network(config, args.backbone_weights).to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    if args.find_lr:
        if dist_info.is_main:
            find_lr(args, network, loader, config, device, autocast, out)
        return 0

    optimizer = make_optimizer(network, args.lr, args.weight_decay)
    steps_per_epoch = max(1, len(loader))
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = max(1, int(args.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps)
    )
    start_epoch, best_map, train_seconds, images_seen = 0, -1.0, 0.0, 0
    command = "python -m model.train " + shlex.join(argv)
    if resume_state is not None:
        network.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_map = float(resume_state["best_map"])
        train_seconds = float(resume_state["card"]["training_seconds"])
        images_seen = int(resume_state["card"]["images_seen"])
        command = f"{resume_state['card']['command']} ; resumed after epoch {start_epoch} with: {command}"
    if dist_info.world_size > 1:
        network = DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = None
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    step = start_epoch * steps_per_epoch
    card: dict[str, Any] = {}
    for epoch in range(start_epoch, args.epochs):
        network.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch_start = time.perf_counter()
        epoch_images = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not dist_info.is_main, dynamic_ncols=True
        )
        for images, targets in bar:
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            terms = compute_loss(network, images, move_targets(targets, device), config, autocast)
            if not torch.isfinite(terms["total"]):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch + 1}, step {step}: "
                    f"{ {k: float(v) for k, v in terms.items()} }; lower --lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
            step += 1
            epoch_images += images.shape[0] * dist_info.world_size
            if writer is not None and step % 10 == 0:
                for name, value in terms.items():
                    writer.add_scalar(f"loss/{name}", float(value), step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(
                loss=f"{float(terms['total'].detach()):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}"
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        images_seen += epoch_images
        if not dist_info.is_main:
            continue
        assert writer is not None
        writer.add_scalar("train/images_per_second", epoch_images / epoch_seconds, epoch + 1)
        inner = bare_network(network)
        val_map = None
        last = epoch + 1 == args.epochs
        if val_set is not None and ((epoch + 1) % args.eval_every == 0 or last):
            report = run_validation(inner, val_set, device, args, args.limit_val)
            val_map = report.result.map50
            writer.add_scalar("val/map50", val_map, epoch + 1)
            log_val_images(writer, inner, val_set, device, args.log_images, epoch + 1)
            tqdm.write(
                f"epoch {epoch + 1}: val mAP@0.5 {val_map:.4f} ({report.images} images), "
                f"{epoch_images / epoch_seconds:.1f} train images/s"
            )
        card = {
            "data": [str(d) for d in args.data],
            "train_split": args.train_split,
            "val_split": args.val_split,
            "train_images": len(train_data),
            "command": command,
            "hardware": hardware_description(device),
            "processes": dist_info.world_size,
            "epochs": epoch + 1,
            "input_size": config.input_size,
            "batch_size": args.batch_size * dist_info.world_size,
            "lr": args.lr,
            "augment": not args.no_augment,
            "backbone_init": args.backbone_weights or "random (from scratch)",
            "training_seconds": round(train_seconds, 1),
            "images_seen": images_seen,
            "train_images_per_second": round(images_seen / max(train_seconds, 1e-9), 2),
            "seed": args.seed,
        }
        state = {
            "model": inner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_map": max(best_map, val_map if val_map is not None else -1.0),
            "config": config.to_dict(),
            "card": card,
        }
        torch.save(state, out / "last.pt")
        if val_map is not None and val_map > best_map:
            best_map = val_map
            torch.save(state, out / "best.pt")
            tqdm.write(f"epoch {epoch + 1}: new best val mAP@0.5 {val_map:.4f} -> {out / 'best.pt'}")
    if writer is not None:
        writer.close()
    if dist_info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    if args.export and dist_info.is_main:
        best = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
        export(
            best,
            Path(args.export),
            val_set,
            device if dist_info.world_size == 1 else resolve_device("auto"),
            args,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return train(parse_args(argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())

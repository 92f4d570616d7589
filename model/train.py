"""Train the grid detector on any dataset :mod:`model.data` reads, or on packs.

    python -m model.train --data VOCDEVKIT --train-split train --val-split val --out runs/NAME \\
        --input-size 320 --time-budget 7200 --export runs/NAME/export
    python -m model.train --data photos/ --init-from weights --time-budget 600 --out runs/mine \\
        --export runs/mine/export          # your own classes, fine-tuned from the shipped model

The training images are decoded once into a uint8 bank on the training device and every batch is
augmented there (:mod:`model.training.augment`): no DataLoader workers. The schedule (warm-up,
cosine decay, mosaic off for the last part) runs over ``--time-budget`` seconds of training when
given, else over ``--epochs``. AdamW, gradient clipping, an EMA of the weights that validation
and export use, bf16 autocast and channels_last where they pay. Logs every loss term, the
learning rate, images/s and val mAP to TensorBoard under ``--out``; writes ``last.pt`` (with this
run's config) at the end and on SIGTERM or Ctrl-C; ``--resume`` continues the same run;
``--init-from`` starts a new run from exported weights; ``--find-lr`` runs the learning-rate range
test instead. Under ``torchrun`` it trains with DDP.

This file reads top to bottom: the flags, then :func:`train` sets up (config, data, network,
optimiser, EMA), hands a :class:`~model.training.trainer.Trainer` its run, and
:func:`~model.training.finish.finish` saves, validates and exports.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from model import hardware
from model.config import LEVEL_SPLIT, DetectorConfig
from model.data.pack import is_pack
from model.loss import LOSS_TERMS
from model.training.config import TrainConfig
from model.training.ema import ModelEMA
from model.training.finish import finish, validate
from model.training.optim import make_optimizer
from model.training.setup import (
    Precision,
    architecture_from,
    initial_network,
    load_bank,
    setup_distributed,
    training_data,
    val_dataset,
)
from model.training.trainer import BatchLoss, Progress, Trainer

SCRATCH = {
    "input_size": 416,
    "neck_channels": 256,
    "head_hidden_channels": 0,
    "stride8_level": False,
    "level_split": LEVEL_SPLIT,
    "lr": 2e-3,
}
FINE_TUNE_LR = 1e-3  # the default peak LR with --init-from (docs/own-classes.md has the comparison)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, help="dataset or pack; repeat for several")
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="val", help="'' for none")
    data.add_argument("--val-data", action="append", default=None, help="validation data (default: --data's)")
    data.add_argument("--classes", default=None, help="class names in id order, a,b,c (default: the data's)")
    data.add_argument("--split-fraction", type=float, default=0.2, help="val share, data without splits")
    data.add_argument("--split-seed", type=int, default=0)
    data.add_argument("--limit-train", type=int, default=None, help="use only the first N train images")
    data.add_argument("--limit-val", type=int, default=None, help="use only the first N val images")
    net = p.add_argument_group("network (unset: the --init-from card's, else the defaults shown)")
    net.add_argument("--input-size", type=int, default=None, help="default 416")
    net.add_argument("--neck-channels", type=int, default=None, help="default 256; 0: stride-32 grid")
    net.add_argument("--head-hidden-channels", type=int, default=None, help="default 0")
    net.add_argument(
        "--stride8-level",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a stride-8 level for small objects (default: off)",
    )
    net.add_argument(
        "--level-split",
        type=int,
        default=None,
        help=f"objects under this many input pixels (sqrt of area) train stride 8 (default {LEVEL_SPLIT})",
    )
    net.add_argument("--backbone-weights", default=None, help="local torchvision ResNet18 state dict")
    net.add_argument("--init-from", default=None, help="exported weights folder to start from")
    run = p.add_argument_group("schedule")
    run.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, plots")
    run.add_argument("--epochs", type=int, default=30, help="length of the schedule without --time-budget")
    run.add_argument("--time-budget", type=float, default=None, help="seconds of training for the run")
    run.add_argument("--batch-size", type=int, default=32, help="per process")
    run.add_argument(
        "--lr", type=float, default=None, help=f"peak LR (2e-3; {FINE_TUNE_LR} with --init-from)"
    )
    run.add_argument("--weight-decay", type=float, default=0.05)
    run.add_argument("--warmup", type=float, default=0.05, help="share of the schedule spent warming up")
    run.add_argument("--freeze-backbone", type=float, default=0.0, help="share of the schedule, trunk frozen")
    run.add_argument("--clip-grad", type=float, default=10.0)
    run.add_argument("--ema-decay", type=float, default=0.9995, help="0: no EMA")
    run.add_argument("--no-augment", action="store_true")
    run.add_argument("--mosaic", type=float, default=0.5, help="share of each batch made as mosaics")
    run.add_argument(
        "--mixup", type=float, default=0.0, help="share of each batch blended with another image"
    )
    run.add_argument(
        "--multi-scale", default=None, help="MIN,MAX: an input side per batch, multiples of 32 (e.g. 320,512)"
    )
    run.add_argument("--box-loss", choices=("giou", "ciou"), default="giou", help="the IoU term of the loss")
    data.add_argument(
        "--canary",
        type=int,
        default=0,
        help="train on the val split too, less a canary of N of its images, which validates",
    )
    run.add_argument(
        "--close-mosaic", type=float, default=0.15, help="last share of the schedule without mosaic"
    )
    run.add_argument("--one-cell", action="store_true", help="only the centre cell trains an object")
    run.add_argument("--binary-objectness", action="store_true", help="objectness target 1, not the IoU")
    run.add_argument(
        "--cache-side", type=int, default=None, help="long side of cached images (default: input)"
    )
    run.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="auto: CUDA and bf16 CPUs")
    run.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    run.add_argument(
        "--compile",
        choices=("off", "default", "reduce-overhead"),
        default="off",
        help="torch.compile the network and the loss (reduce-overhead: with CUDA graphs); eager if it fails",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto")
    run.add_argument("--resume", default=None, help="a last.pt checkpoint to continue (the same run)")
    out = p.add_argument_group("validation and export")
    out.add_argument(
        "--eval-every", type=int, default=0, help="epochs between val evaluations (0: at the end)"
    )
    out.add_argument("--eval-at", default=None, help="also validate after these minutes of training, 5,10")
    out.add_argument("--export", default=None, help="export the EMA weights to this weights folder")
    out.add_argument(
        "--export-part-mib", type=float, default=None, help="split the exported weights into parts"
    )
    out.add_argument("--workers", type=int, default=2, help="DataLoader workers of validation")
    out.add_argument("--log-images", type=int, default=4, help="val images drawn to TensorBoard")
    out.add_argument("--find-lr", action="store_true", help="run the LR range test instead of training")
    out.add_argument("--find-lr-steps", type=int, default=100)
    args = p.parse_args(argv)
    arch = {**SCRATCH, **architecture_from(args.init_from)} if args.init_from else SCRATCH
    for key in ("input_size", "neck_channels", "head_hidden_channels", "stride8_level", "level_split"):
        if getattr(args, key) is None:
            setattr(args, key, arch[key])
    if args.lr is None:
        args.lr = FINE_TUNE_LR if args.init_from else SCRATCH["lr"]
    return args


def train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    dist_info, device = setup_distributed(args.device)
    command = "python -m model.train " + shlex.join(argv)
    val_data = tuple(args.val_data or [root for root in args.data if not is_pack(root)])
    config = TrainConfig.from_args(args, command, val_data)
    resume = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    start = time.perf_counter()
    if resume is not None:  # the same run: its own config, not this command line's
        detector = DetectorConfig.from_dict(resume["config"])
        saved = TrainConfig.from_dict(resume["config_train"]) if "config_train" in resume else config
        config = replace(saved, command=f"{saved.command} ; resumed with: {command}")
        dataset, _ = training_data(config, detector.classes)
    else:
        dataset, classes = training_data(config, config.classes)
        detector = DetectorConfig(
            classes=classes,
            input_size=args.input_size,
            neck_channels=args.neck_channels,
            stride8_level=args.stride8_level,
            level_split=args.level_split,
            head_hidden_channels=args.head_hidden_channels,
        )
    torch.manual_seed(config.seed + dist_info.rank)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    precision = Precision.choose(device, config.bf16, config.channels_last)

    canvas = config.cache_side or max((detector.input_size, *config.scales))
    bank, data_notes = load_bank(config, dataset, detector.classes, device, canvas)
    load_seconds = time.perf_counter() - start
    first, init = initial_network(config, detector)
    network: torch.nn.Module = first.to(device).to(memory_format=precision.memory_format)  # type: ignore[call-overload]
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + dist_info.rank)
    loss = BatchLoss(
        network,
        bank,
        detector,
        precision,
        generator,
        config.neighbours,
        config.iou_objectness,
        config.scales,
        config.box_loss,
        config.mixup,
        config.compile,
    )
    if args.find_lr:
        if dist_info.is_main:
            from model.training.lr_find import find_lr

            find_lr(
                network,
                lambda idx: loss(idx, config.augment)["total"],
                len(bank),
                config.batch_size,
                config.weight_decay,
                device,
                out,
                args.find_lr_steps,
                generator,
            )
        return 0

    optimizer = make_optimizer(network, config.lr, config.weight_decay, device)
    ema = ModelEMA(network, config.ema_decay) if config.ema_decay > 0 else None
    progress = Progress()
    if resume is not None:
        network.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if ema is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        progress = Progress(**resume["progress"])
        init = resume["card"].get("init_from")
    if dist_info.world_size > 1:
        if config.freeze_backbone:
            raise SystemExit("--freeze-backbone is not supported under torchrun")
        network = DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
        loss.rebind(network)
    trainer = Trainer(config, detector, device, dist_info, bank, network, optimizer, ema, progress, loss)
    val_set = None
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        val_set = val_dataset(config, detector.classes)
        if val_set is not None:
            data_notes.append(f"val: {val_set.description}")
            trainer.validate = lambda net: validate(net, val_set, device, config).result.map50
        trainer.writer = SummaryWriter(str(out / "tensorboard"))
        print_header(trainer, load_seconds, data_notes, init)

    trainer.run()

    if dist_info.is_main:
        finish(trainer, out, val_set, data_notes, init)
    if dist_info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def print_header(trainer: Trainer, load_seconds: float, notes: list[str], init: dict | None) -> None:
    config, detector = trainer.config, trainer.detector
    length = f"budget {config.time_budget:.0f} s" if config.time_budget else f"{config.epochs} epochs"
    for note in notes:
        print(f"data: {note}", flush=True)
    if init is not None:
        print(
            f"init from {init['weights']} (version {init['version']}): {init['tensors_loaded']} tensors; "
            f"{init['head']}; fresh: {init['fresh'] or 'none'}",
            flush=True,
        )
    print(
        f"training {len(trainer.bank)} images ({load_seconds:.1f} s to load) on "
        f"{hardware.describe(trainer.device)}, batch {trainer.batch} x {trainer.dist_info.world_size}, "
        f"input {detector.input_size}, stride {'+'.join(map(str, detector.strides))}, "
        f"{len(detector.classes)} classes, {length}, "
        f"lr {config.lr}",
        flush=True,
    )
    names = " ".join(f"{name:>6}" for name in LOSS_TERMS)
    print(f"{'epoch':>5} {'images/s':>9} {names} {'lr':>8} {'seconds':>8}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return train(parse_args(argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())

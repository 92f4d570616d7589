"""Train the grid detector on VOC folders or packs.

    python -m model.train --data VOCDEVKIT --train-split train --val-split val --out runs/NAME \\
        --input-size 320 --time-budget 7200 --export runs/NAME/export

The training images are decoded once into a uint8 bank on the training device (a VOCdevkit is
read from disk, a pack made by ``python -m model.pack`` is decoded there, with nvJPEG on a GPU)
and every batch is augmented there (:mod:`model.augment`): no DataLoader workers. The schedule
(warm-up, cosine decay, mosaic switched off for the last part) runs over ``--time-budget``
seconds of wall clock when given, else over ``--epochs``; either way the run ends with its
schedule complete. AdamW with weight decay off norms and biases, gradient clipping, an EMA of
the weights that validation and export use, bf16 autocast and channels_last where they pay.
Logs every loss term, the learning rate, images/s and val mAP to TensorBoard under ``--out``;
writes ``last.pt`` at the end (and on SIGTERM or Ctrl-C); ``--resume`` continues;
``--export DIR`` writes the EMA weights with their card. ``--find-lr`` runs the learning-rate
range test (:mod:`model.lr_find`) instead. Under ``torchrun`` it trains with DDP.

The shape, top to bottom: :func:`train` sets up (config, bank, network, optimizer, EMA) and
hands a :class:`Trainer` its :meth:`~Trainer.run` (epochs), :meth:`~Trainer.epoch` (steps) and
:meth:`~Trainer.step` (one optimizer step); :func:`finish` saves, validates and exports.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.augment import AugmentConfig, ImageBank, augment_batch, build_bank
from model.boxes import assign_targets, split_grid
from model.config import DetectorConfig, DetectParams
from model.data import VOCDetection
from model.draw import draw_detections
from model.ema import ModelEMA
from model.evaluate import EvaluationReport, evaluate_predictor
from model.export import export_weights
from model.loss import detection_loss
from model.network import GridDetector, build_network
from model.pack import decode_packed, is_pack, read_pack
from model.predictor import Predictor, resolve_device


class NonFiniteLossError(RuntimeError):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", action="append", required=True, help="VOCdevkit or pack folder; repeat for several"
    )
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="'' for none")
    p.add_argument(
        "--val-data", action="append", default=None, help="VOCdevkit for validation (default: --data's)"
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, plots")
    p.add_argument("--input-size", type=int, default=416)
    p.add_argument("--neck-channels", type=int, default=256, help="0: no neck, stride-32 grid")
    p.add_argument("--head-hidden-channels", type=int, default=0)
    p.add_argument(
        "--cache-side", type=int, default=None, help="long side of cached images (default: input size)"
    )
    p.add_argument("--epochs", type=int, default=30, help="length of the schedule without --time-budget")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of wall clock for the whole run")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="share of the schedule spent warming up")
    p.add_argument("--clip-grad", type=float, default=10.0)
    p.add_argument("--ema-decay", type=float, default=0.9995, help="0: no EMA")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--mosaic", type=float, default=0.5, help="share of each batch made as mosaics")
    p.add_argument(
        "--close-mosaic", type=float, default=0.15, help="last share of the schedule without mosaic"
    )
    p.add_argument("--one-cell", action="store_true", help="only the centre cell trains an object")
    p.add_argument("--binary-objectness", action="store_true", help="objectness target 1, not the IoU")
    p.add_argument(
        "--bf16", choices=("auto", "on", "off"), default="auto", help="auto: on for CUDA and bf16 CPUs"
    )
    p.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: on for CUDA and bf16 CPUs",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone-weights", default=None, help="local torchvision ResNet18 state dict")
    p.add_argument("--resume", default=None, help="a last.pt checkpoint to continue from")
    p.add_argument("--export", default=None, help="export the EMA weights to this weights folder")
    p.add_argument(
        "--export-part-mib", type=float, default=None, help="split the exported weights into parts"
    )
    p.add_argument("--eval-every", type=int, default=0, help="epochs between val evaluations (0: at the end)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N train images")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N val images")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of validation")
    p.add_argument("--log-images", type=int, default=4, help="val images drawn to TensorBoard")
    p.add_argument("--find-lr", action="store_true", help="run the LR range test instead of training")
    p.add_argument("--find-lr-steps", type=int, default=100)
    return p.parse_args(argv)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run is made of, frozen and recorded in checkpoints and the card."""

    data: tuple[str, ...]
    val_data: tuple[str, ...]
    train_split: str
    val_split: str
    out: str
    epochs: int
    time_budget: float | None
    batch_size: int
    lr: float
    weight_decay: float
    warmup: float
    clip_grad: float
    ema_decay: float
    augment: AugmentConfig
    close_mosaic: float
    neighbours: bool
    iou_objectness: bool
    cache_side: int
    seed: int
    eval_every: int
    limit_train: int | None
    limit_val: int | None
    workers: int
    log_images: int
    backbone_weights: str | None
    export: str | None
    export_part_mib: float | None
    command: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str) -> TrainConfig:
        augment = AugmentConfig.none() if args.no_augment else AugmentConfig(mosaic=args.mosaic)
        return cls(
            data=tuple(args.data),
            val_data=tuple(args.val_data or [root for root in args.data if not is_pack(root)]),
            train_split=args.train_split,
            val_split=args.val_split,
            out=args.out,
            epochs=args.epochs,
            time_budget=args.time_budget,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup=args.warmup,
            clip_grad=args.clip_grad,
            ema_decay=args.ema_decay,
            augment=augment,
            close_mosaic=args.close_mosaic,
            neighbours=not args.one_cell,
            iou_objectness=not args.binary_objectness,
            cache_side=args.cache_side or args.input_size,
            seed=args.seed,
            eval_every=args.eval_every,
            limit_train=args.limit_train,
            limit_val=args.limit_val,
            workers=args.workers,
            log_images=args.log_images,
            backbone_weights=args.backbone_weights,
            export=args.export,
            export_part_mib=args.export_part_mib,
            command=command,
        )


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


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores (torch {torch.__version__})"


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of the schedule, then cosine decay to 0.02."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    done = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * done))


def make_optimizer(
    network: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA; no weight decay on norms and biases."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in network.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        fused=device.type == "cuda",
    )


def load_bank(config: TrainConfig, classes: Sequence[str], device: torch.device) -> ImageBank:
    """Every training image, decoded once into a uint8 bank on ``device`` (see :mod:`model.augment`)."""
    images: list[Tensor] = []
    boxes: list[Tensor] = []
    labels: list[Tensor] = []
    voc_roots = [root for root in config.data if not is_pack(root)]
    for root in config.data:
        if is_pack(root):
            packed = read_pack(root, classes)
            images += decode_packed(packed, device)
            boxes += [item.boxes_xyxy for item in packed]
            labels += [item.labels for item in packed]
    if voc_roots:
        dataset = VOCDetection(voc_roots, config.train_split, classes=classes)
        for index in tqdm(range(len(dataset)), desc="decode", leave=False, disable=not sys.stderr.isatty()):
            image, annotation = dataset[index]
            images.append(image.to(device))
            boxes.append(annotation.boxes_xyxy)
            labels.append(annotation.labels)
    if config.limit_train:
        images, boxes, labels = (
            images[: config.limit_train],
            boxes[: config.limit_train],
            labels[: config.limit_train],
        )
    return build_bank(images, boxes, labels, config.cache_side)


def val_dataset(config: TrainConfig, classes: Sequence[str]) -> VOCDetection | None:
    if not config.val_split or not config.val_data:
        return None
    return VOCDetection(config.val_data, config.val_split, classes=classes)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (Linux ``/proc/cpuinfo`` flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_contexts(
    device: torch.device, bf16: str, channels_last: str
) -> tuple[AbstractContextManager[Any], torch.memory_format]:
    """bf16 autocast and channels_last: ``auto`` turns both on for CUDA and for a CPU with native
    bf16 (AVX-512 BF16 or AMX), where the step ran 2.1x as fast with val mAP inside the seed noise
    (README, "Ablations"); off on other CPUs, where bf16 is emulated."""
    fast = device.type == "cuda" or cpu_has_bf16()
    use_bf16 = bf16 == "on" or (bf16 == "auto" and fast)
    use_cl = channels_last == "on" or (channels_last == "auto" and fast)
    autocast: AbstractContextManager[Any] = (
        torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    )
    return autocast, torch.channels_last if use_cl else torch.contiguous_format


def training_step_loss(
    network: nn.Module,
    bank: ImageBank,
    indices: Tensor,
    config: TrainConfig,
    detector: DetectorConfig,
    augment: AugmentConfig,
    generator: torch.Generator,
    autocast: AbstractContextManager[Any],
    memory_format: torch.memory_format,
) -> dict[str, Tensor]:
    """Augment a batch on the bank's device, run the network, assign targets, return the loss terms."""
    images, boxes, labels = augment_batch(
        bank, indices, detector.input_size, augment, generator, detector.mean, detector.std
    )
    images = images.contiguous(memory_format=memory_format)
    with autocast:
        raw = network(images)
    grid = assign_targets(boxes, labels, raw.shape[2], raw.shape[3], detector.stride, config.neighbours)
    return detection_loss(split_grid(raw, detector.stride), grid, iou_objectness=config.iou_objectness)


def bare_network(network: nn.Module) -> GridDetector:
    inner = network.module if isinstance(network, DistributedDataParallel) else network
    assert isinstance(inner, GridDetector)
    return inner


def validate(
    network: GridDetector, val_set: VOCDetection, device: torch.device, config: TrainConfig
) -> EvaluationReport:
    # float32 so that validating never changes the network's dtype.
    predictor = Predictor(network, device, dtype=torch.float32)
    return evaluate_predictor(
        predictor, val_set, batch_size=32, workers=config.workers, progress=False, limit=config.limit_val
    )


def log_val_images(
    writer: Any, network: GridDetector, val_set: VOCDetection, device: torch.device, count: int, step: int
) -> None:
    predictor = Predictor(network, device, dtype=torch.float32)
    for k in range(min(count, len(val_set))):
        image, _ = val_set[k]
        found = predictor(image, DetectParams(score_threshold=0.2))[0]
        writer.add_image(f"val/{k}", draw_detections(image, found, network.config.classes), step)


class StopFlag:
    """Set by SIGTERM/SIGINT so the loop ends at the next step and the run still saves."""

    def __init__(self) -> None:
        self.set = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True


@dataclass
class Progress:
    """Where the run is: updated every step, saved in checkpoints."""

    step: int = 0
    images_seen: int = 0
    seconds: float = 0.0
    epoch: int = 0
    best_map: float = -1.0

    def fraction(self, config: TrainConfig, steps_per_epoch: int) -> float:
        if config.time_budget:
            return self.seconds / config.time_budget
        return self.step / max(1, config.epochs * steps_per_epoch)


LOSS_TERMS = ("total", "objectness", "box", "giou", "class")


@dataclass
class Trainer:
    """One training run: :meth:`run` loops epochs, :meth:`epoch` loops steps, :meth:`step` is one step."""

    config: TrainConfig
    detector: DetectorConfig
    device: torch.device
    dist_info: Distributed
    bank: ImageBank
    network: nn.Module  # DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    ema: ModelEMA | None
    progress: Progress
    autocast: AbstractContextManager[Any]
    memory_format: torch.memory_format
    val_set: VOCDetection | None = None
    writer: Any = None
    stop: StopFlag = field(default_factory=StopFlag)

    def __post_init__(self) -> None:
        share = len(self.bank) // self.dist_info.world_size
        self.batch = min(self.config.batch_size, share)
        self.steps_per_epoch = max(1, share // self.batch)
        seed = self.config.seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed * 1000 + self.dist_info.rank)
        self.shuffle = torch.Generator(device=self.device).manual_seed(seed)  # the same on every process
        self.no_mosaic = replace(self.config.augment, mosaic=0.0)
        self.done = self.progress.fraction(self.config, self.steps_per_epoch) >= 1.0
        self.lr = 0.0

    @property
    def evaluated(self) -> GridDetector:
        """The weights that validation and export use: the EMA when there is one."""
        module = self.ema.module if self.ema is not None else bare_network(self.network)
        assert isinstance(module, GridDetector)
        return module

    def run(self) -> None:
        self.stop.install()
        self.network.train()
        self._clock = (time.perf_counter(), self.progress.seconds)
        while not self.done and not self.stop.set:
            start, images = time.perf_counter(), self.progress.images_seen
            means = self.epoch()
            if means is None:
                break
            rate = (self.progress.images_seen - images) / max(time.perf_counter() - start, 1e-9)
            if self.dist_info.is_main:
                self.log_epoch(means, rate)
        if self.stop.set:
            print("stopped by a signal: saving what was trained", flush=True)

    def epoch(self) -> list[float] | None:
        """Steps over this process's share of one permutation, until it ends or the schedule does.

        Returns the mean loss terms (read from the device once, here), or ``None`` if no step ran.
        """
        order = torch.randperm(len(self.bank), generator=self.shuffle, device=self.device)
        order = order[self.dist_info.rank :: self.dist_info.world_size]
        sums = torch.zeros(len(LOSS_TERMS), device=self.device)
        steps = 0
        for first in range(0, len(order) - self.batch + 1, self.batch):
            fraction = self.schedule_position()
            if fraction >= 1.0 or self.stop.set:
                self.done = True
                break
            sums += self.step(order[first : first + self.batch], fraction)
            steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._tick()
        if steps == 0:
            return None
        self.progress.epoch += 1
        means = (sums / steps).tolist()
        if not all(math.isfinite(v) for v in means):
            raise NonFiniteLossError(
                f"non-finite loss in epoch {self.progress.epoch}: {means}; lower --lr or check the data"
            )
        return means

    def schedule_position(self) -> float:
        """How far the schedule is (0 to 1); under torchrun every process agrees on it."""
        if self.dist_info.world_size > 1:
            shared = torch.tensor([self.progress.seconds, float(self.stop.set)], device=self.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            self.progress.seconds, self.stop.set = float(shared[0]), bool(shared[1])
        return self.progress.fraction(self.config, self.steps_per_epoch)

    def step(self, indices: Tensor, fraction: float) -> Tensor:
        """One optimizer step on ``bank[indices]``; returns the loss terms, still on the device."""
        self.lr = self.config.lr * lr_factor(fraction, self.config.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        augment = self.no_mosaic if fraction >= 1.0 - self.config.close_mosaic else self.config.augment
        terms = training_step_loss(
            self.network,
            self.bank,
            indices,
            self.config,
            self.detector,
            augment,
            self.generator,
            self.autocast,
            self.memory_format,
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if self.config.clip_grad:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(bare_network(self.network))
        self.progress.step += 1
        self.progress.images_seen += len(indices) * self.dist_info.world_size
        self._tick()
        return torch.stack([terms[k].detach() for k in LOSS_TERMS])

    def _tick(self) -> None:
        start, before = self._clock
        self.progress.seconds = before + time.perf_counter() - start

    def log_epoch(self, means: list[float], rate: float) -> None:
        progress = self.progress
        terms = " ".join(f"{v:>6.3f}" for v in means)
        print(
            f"{progress.epoch:>5} {rate:>9.1f} {terms} {self.lr:>8.2e} {progress.seconds:>8.1f}", flush=True
        )
        if self.writer is not None:
            for name, value in zip(LOSS_TERMS, means, strict=True):
                self.writer.add_scalar(f"loss/{name}", value, progress.step)
            self.writer.add_scalar("lr", self.lr, progress.step)
            self.writer.add_scalar("train/images_per_second", rate, progress.step)
        every = self.config.eval_every
        if self.val_set is not None and every and progress.epoch % every == 0 and not self.done:
            report = validate(self.evaluated, self.val_set, self.device, self.config)
            progress.best_map = max(progress.best_map, report.result.map50)
            if self.writer is not None:
                self.writer.add_scalar("val/map50", report.result.map50, progress.step)
            print(f"epoch {progress.epoch}: val mAP@0.5 {report.result.map50:.4f} (EMA)", flush=True)
            self.network.train()

    def checkpoint(self, card: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": bare_network(self.network).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress),
            "config": self.detector.to_dict(),
            "card": card,
        }


def print_header(trainer: Trainer, load_seconds: float) -> None:
    config, detector = trainer.config, trainer.detector
    length = f"budget {config.time_budget:.0f} s" if config.time_budget else f"{config.epochs} epochs"
    print(
        f"training {len(trainer.bank)} images ({load_seconds:.1f} s to load) on "
        f"{hardware_description(trainer.device)}, batch {trainer.batch} x {trainer.dist_info.world_size}, "
        f"input {detector.input_size}, stride {detector.stride}, {length}",
        flush=True,
    )
    names = " ".join(f"{name:>6}" for name in ("obj", "box", "giou", "cls"))
    print(f"{'epoch':>5} {'images/s':>9} {'loss':>6} {names} {'lr':>8} {'seconds':>8}", flush=True)


def train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    dist_info, device = setup_distributed(args.device)
    command = "python -m model.train " + shlex.join(argv)
    config = TrainConfig.from_args(args, command)
    torch.manual_seed(config.seed + dist_info.rank)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    resume = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    if resume is not None:
        detector = DetectorConfig.from_dict(resume["config"])
        config = replace(config, command=f"{resume['card']['command']} ; resumed with: {command}")
    else:
        detector = DetectorConfig(
            input_size=args.input_size,
            neck_channels=args.neck_channels,
            head_hidden_channels=args.head_hidden_channels,
        )
    autocast, memory_format = precision_contexts(device, args.bf16, args.channels_last)
    start = time.perf_counter()
    bank = load_bank(config, detector.classes, device)
    load_seconds = time.perf_counter() - start
    network: nn.Module = build_network(detector, config.backbone_weights).to(device)
    network = network.to(memory_format=memory_format)  # type: ignore[call-overload]
    if args.find_lr:
        if dist_info.is_main:
            run_find_lr(args, config, detector, network, bank, autocast, memory_format, device, out)
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
    if dist_info.world_size > 1:
        network = DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    trainer = Trainer(
        config, detector, device, dist_info, bank, network, optimizer, ema, progress, autocast, memory_format
    )
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        trainer.val_set = val_dataset(config, detector.classes)
        trainer.writer = SummaryWriter(str(out / "tensorboard"))
        print_header(trainer, load_seconds)

    trainer.run()

    if dist_info.is_main:
        finish(trainer, out)
    if dist_info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def finish(trainer: Trainer, out: Path) -> None:
    """The end of a run: ``last.pt``, the final validation, TensorBoard images, the export."""
    config, progress = trainer.config, trainer.progress
    card = make_card(
        config,
        trainer.detector,
        trainer.device,
        trainer.dist_info,
        progress,
        len(trainer.bank),
        trainer.ema is not None,
    )
    torch.save(trainer.checkpoint(card), out / "last.pt")
    if trainer.val_set is not None:
        report = validate(trainer.evaluated, trainer.val_set, trainer.device, config)
        trainer.writer.add_scalar("val/map50", report.result.map50, progress.step)
        log_val_images(
            trainer.writer,
            trainer.evaluated,
            trainer.val_set,
            trainer.device,
            config.log_images,
            progress.step,
        )
        weights = "EMA weights" if trainer.ema is not None else "last weights"
        print(f"final val mAP@0.5 {report.result.map50:.4f} ({report.images} images, {weights})", flush=True)
    trainer.writer.close()
    if config.export:
        export_weights(
            trainer.evaluated,
            Path(config.export),
            card,
            trainer.val_set,
            part_mib=config.export_part_mib,
            limit_val=config.limit_val,
            workers=config.workers,
        )


def run_find_lr(
    args: argparse.Namespace,
    config: TrainConfig,
    detector: DetectorConfig,
    network: nn.Module,
    bank: ImageBank,
    autocast: AbstractContextManager[Any],
    memory_format: torch.memory_format,
    device: torch.device,
    out: Path,
) -> None:
    from model.lr_find import find_lr

    generator = torch.Generator(device=device).manual_seed(config.seed)

    def loss_fn(indices: Tensor) -> Tensor:
        terms = training_step_loss(
            network, bank, indices, config, detector, config.augment, generator, autocast, memory_format
        )
        return terms["total"]

    find_lr(
        network,
        loss_fn,
        len(bank),
        config.batch_size,
        config.weight_decay,
        device,
        out,
        args.find_lr_steps,
        generator,
    )


def make_card(
    config: TrainConfig,
    detector: DetectorConfig,
    device: torch.device,
    dist_info: Distributed,
    progress: Progress,
    train_images: int,
    ema: bool,
) -> dict[str, Any]:
    return {
        "data": list(config.data),
        "train_split": config.train_split,
        "val_split": config.val_split,
        "train_images": train_images,
        "command": config.command,
        "hardware": hardware_description(device),
        "processes": dist_info.world_size,
        "epochs": round(progress.images_seen / max(1, train_images), 2),
        "steps": progress.step,
        "input_size": detector.input_size,
        "stride": detector.stride,
        "batch_size": config.batch_size * dist_info.world_size,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "ema_decay": config.ema_decay if ema else None,
        "weights": "EMA" if ema else "last step",
        "augment": asdict(config.augment),
        "close_mosaic": config.close_mosaic,
        "assignment": "centre + 2 nearest cells" if config.neighbours else "centre cell",
        "objectness_target": "IoU" if config.iou_objectness else "1",
        "time_budget_seconds": config.time_budget,
        "backbone_init": config.backbone_weights or "random (from scratch)",
        "training_seconds": round(progress.seconds, 1),
        "images_seen": progress.images_seen,
        "train_images_per_second": round(progress.images_seen / max(progress.seconds, 1e-9), 2),
        "seed": config.seed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return train(parse_args(argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())

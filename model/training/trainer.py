"""The training loop: :meth:`Trainer.run` loops epochs, :meth:`Trainer.epoch` steps, :meth:`Trainer.step`
is one optimiser step. Set-up is :mod:`model.training.setup`, the end of a run :mod:`.finish`."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from model.boxes import assign_levels, split_grid
from model.config import DetectorConfig
from model.grid import layout_of
from model.loss import LOSS_TERMS, detection_loss
from model.network import GridDetector
from model.training.augment import AugmentConfig, ImageBank, augment_batch
from model.training.config import TrainConfig
from model.training.ema import ModelEMA
from model.training.optim import lr_factor
from model.training.setup import Distributed, Precision


class NonFiniteLossError(RuntimeError):
    pass


def bare_network(network: nn.Module) -> GridDetector:
    inner = network.module if isinstance(network, DistributedDataParallel) else network
    assert isinstance(inner, GridDetector)
    return inner


@dataclass
class BatchLoss:
    """Augment a batch of the bank on its device, run the network, assign targets, return the loss terms."""

    network: nn.Module
    bank: ImageBank
    detector: DetectorConfig
    precision: Precision
    generator: torch.Generator
    neighbours: bool = True
    iou_objectness: bool = True
    scales: tuple[int, ...] = ()  # multi-scale: an input side drawn per batch
    box_loss: str = "giou"
    mixup: float = 0.0
    compile_mode: str = "off"  # off, default or reduce-overhead (CUDA graphs): torch.compile

    def __post_init__(self) -> None:
        self.rebind(self.network)

    def rebind(self, network: nn.Module) -> None:
        """Run ``network`` (the same one wrapped, e.g. by DDP), compiled again under ``--compile``."""
        self.network = network
        self.forward: Any = network
        self.criterion: Any = self.loss_terms
        if self.compile_mode != "off":
            import torch._dynamo

            # One graph per input side under multi-scale, and a few spare.
            torch._dynamo.config.cache_size_limit = max(8, len(self.scales) + 4)
            self.forward = torch.compile(network, mode=self.compile_mode, dynamic=False)
            # Static shapes: the boxes are padded to a few bucket sizes (pad_to_bucket).
            self.criterion = torch.compile(self.loss_terms, mode=self.compile_mode, dynamic=False)

    @property
    def compiled(self) -> bool:
        return self.forward is not self.network

    def use_eager(self) -> None:
        """Back to the eager network and loss (when compiling fails on this machine)."""
        self.forward, self.criterion = self.network, self.loss_terms

    def size(self) -> int:
        """This batch's input side: the detector's, or one of ``scales`` drawn by the generator."""
        if not self.scales:
            return self.detector.input_size
        pick = torch.randint(
            0, len(self.scales), (1,), generator=self.generator, device=self.generator.device
        )
        return self.scales[int(pick)]

    def __call__(self, indices: Tensor, augment: AugmentConfig) -> dict[str, Tensor]:
        detector = self.detector
        images, boxes, labels = augment_batch(
            self.bank, indices, self.size(), augment, self.generator, detector.mean, detector.std
        )
        if self.mixup > 0:
            images, boxes, labels = mixup(images, boxes, labels, self.mixup, self.generator)
        images = images.contiguous(memory_format=self.precision.memory_format)
        with self.precision.autocast:
            raw = self.forward(images)  # (B, 5 + C, S/s, S/s), or (B, 5 + C, N) with two levels
        if self.compiled:
            boxes, labels = pad_to_bucket(boxes, labels)
        terms: dict[str, Tensor] = self.criterion(raw, boxes, labels)
        return terms

    def loss_terms(self, raw: Tensor, boxes: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The targets of the batch's boxes on every level, and the loss of ``raw`` against them."""
        detector = self.detector
        layout = layout_of(raw.shape, detector.strides)
        grid = assign_levels(boxes, labels, layout, detector.level_split, self.neighbours)
        output = split_grid(raw, detector.strides)
        return detection_loss(output, grid, iou_objectness=self.iou_objectness, iou_loss=self.box_loss)


def pad_to_bucket(boxes: Tensor, labels: Tensor, smallest: int = 16) -> tuple[Tensor, Tensor]:
    """Boxes ``(B, M, 4)`` and labels ``(B, M)`` padded (label -1: no box) to the next power of two
    from ``smallest``, so that a compiled loss sees a few shapes, not one per box count."""
    most = labels.shape[1]
    bucket = max(smallest, 1 << max(0, most - 1).bit_length())
    if bucket == most:
        return boxes, labels
    extra = bucket - most
    boxes = torch.cat([boxes, boxes.new_zeros(boxes.shape[0], extra, 4)], 1)
    labels = torch.cat([labels, labels.new_full((labels.shape[0], extra), -1)], 1)
    return boxes, labels


def mixup(
    images: Tensor, boxes: Tensor, labels: Tensor, share: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``round(share * B)`` images of a batch blended half and half with another image of
    the batch (the next one, cyclically); each keeps both images' boxes. Boxes ``(B, M, 4)`` become
    ``(B, 2M, 4)``, the second half -1 (no box) for the images left alone."""
    batch = images.shape[0]
    mixed = round(share * batch)
    if mixed == 0 or batch < 2:
        return images, boxes, labels
    partner = (torch.arange(mixed, device=images.device) + 1) % batch
    images = images.clone()
    images[:mixed] = 0.5 * images[:mixed] + 0.5 * images[partner]
    extra_boxes = torch.zeros_like(boxes)
    extra_labels = torch.full_like(labels, -1)
    extra_boxes[:mixed], extra_labels[:mixed] = boxes[partner], labels[partner]
    return images, torch.cat([boxes, extra_boxes], 1), torch.cat([labels, extra_labels], 1)


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
    """Where the run is: updated every step, saved in checkpoints. ``seconds`` counts training only."""

    step: int = 0
    images_seen: int = 0
    seconds: float = 0.0
    epoch: int = 0
    best_map: float = -1.0
    evaluations: list[dict[str, float]] = field(default_factory=list)  # val mAP at --eval-at times

    def fraction(self, config: TrainConfig, steps_per_epoch: int) -> float:
        if config.time_budget:
            return self.seconds / config.time_budget
        return self.step / max(1, config.epochs * steps_per_epoch)


@dataclass
class Trainer:
    """One training run over ``bank``; ``validate`` (EMA weights -> val mAP) is given by the set-up."""

    config: TrainConfig
    detector: DetectorConfig
    device: torch.device
    dist_info: Distributed
    bank: ImageBank
    network: nn.Module  # DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    ema: ModelEMA | None
    progress: Progress
    loss: BatchLoss
    validate: Any = None  # Callable[[GridDetector], float] | None: val mAP@0.5 of those weights
    writer: Any = None
    stop: StopFlag = field(default_factory=StopFlag)
    batch: int = field(init=False)
    steps_per_epoch: int = field(init=False)
    shuffle: torch.Generator = field(init=False)  # the same on every process
    lr: float = field(init=False, default=0.0)
    done: bool = field(init=False, default=False)
    frozen: bool = field(init=False, default=False)
    compile_checked_at: int = field(init=False, default=0)  # the step whose failure falls back to eager

    def __post_init__(self) -> None:
        self.compile_checked_at = self.progress.step
        share = len(self.bank) // self.dist_info.world_size
        self.batch = min(self.config.batch_size, share)
        self.steps_per_epoch = max(1, share // self.batch)
        self.shuffle = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.done = self.progress.fraction(self.config, self.steps_per_epoch) >= 1.0

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
                self.scheduled_validation()
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

    def freeze_trunk(self, frozen: bool) -> None:
        """The trunk's parameters out of (or back into) the backward pass."""
        if frozen != self.frozen:
            for param in bare_network(self.network).backbone.parameters():
                param.requires_grad_(not frozen)
            self.frozen = frozen

    def step(self, indices: Tensor, fraction: float) -> Tensor:
        """One optimizer step on ``bank[indices]``; returns the loss terms, still on the device.

        Under ``--compile`` the first step compiles; if compiling fails on this machine (no C
        compiler, an unsupported operator), the run says why and goes on eager."""
        if self.loss.compiled and self.progress.step == self.compile_checked_at:
            try:
                return self._step(indices, fraction)
            except Exception as exc:
                print(f"--compile failed ({type(exc).__name__}: {exc}); training eager", flush=True)
                self.loss.use_eager()
                self.optimizer.zero_grad(set_to_none=True)
        return self._step(indices, fraction)

    def _step(self, indices: Tensor, fraction: float) -> Tensor:
        config = self.config
        self.lr = config.lr * lr_factor(fraction, config.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.freeze_trunk(fraction < config.freeze_backbone)
        closing = fraction >= 1.0 - config.close_mosaic
        augment = replace(config.augment, mosaic=0.0) if closing else config.augment
        terms = self.loss(indices, augment)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if config.clip_grad:
            nn.utils.clip_grad_norm_(self.network.parameters(), config.clip_grad)
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

    def _untimed(self, seconds: float) -> None:
        """Leave ``seconds`` (spent validating) out of the training clock."""
        start, before = self._clock
        self._clock = (start + seconds, before)

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

    def scheduled_validation(self) -> None:
        """Validate every ``--eval-every`` epochs and once past each ``--eval-at`` time, off the clock."""
        progress, config = self.progress, self.config
        every = config.eval_every and progress.epoch % config.eval_every == 0
        marks = [t for t in config.eval_at if t <= progress.seconds]
        due = marks[len(progress.evaluations) :]
        if self.validate is None or self.done or not (every or due):
            return
        start = time.perf_counter()
        map50 = float(self.validate(self.evaluated))
        progress.best_map = max(progress.best_map, map50)
        if due:
            progress.evaluations.append({"seconds": round(progress.seconds, 1), "map50": round(map50, 6)})
        if self.writer is not None:
            self.writer.add_scalar("val/map50", map50, progress.step)
        print(f"epoch {progress.epoch} ({progress.seconds:.0f} s): val mAP@0.5 {map50:.4f} (EMA)", flush=True)
        self.network.train()
        self._untimed(time.perf_counter() - start)

    def checkpoint(self, card: dict[str, Any]) -> dict[str, Any]:
        """``last.pt``: weights, EMA, optimiser, progress, and both configs, so a resume is the same run."""
        return {
            "model": bare_network(self.network).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "progress": {**self.progress.__dict__},
            "config": self.detector.to_dict(),
            "config_train": self.config.to_dict(),
            "card": card,
        }

"""The frozen description of a training run, saved in ``last.pt`` so that ``--resume`` is the same run."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

from model.training.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run is made of, besides the network's own :class:`~model.config.DetectorConfig`.

    Recorded in ``last.pt`` (``config_train``) and restored from it by ``--resume``; its main
    values are in the card.
    """

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
    cache_side: int | None  # None: the input size
    seed: int
    eval_every: int
    limit_train: int | None
    limit_val: int | None
    workers: int
    log_images: int
    backbone_weights: str | None
    export: str | None
    export_part_mib: float | None
    classes: tuple[str, ...] | None = None  # None: the data's
    split_fraction: float = 0.2
    split_seed: int = 0
    init_from: str | None = None
    freeze_backbone: float = 0.0  # share of the schedule with the trunk frozen
    eval_at: tuple[float, ...] = ()  # seconds of training after which to validate
    bf16: str = "auto"
    channels_last: str = "auto"
    scales: tuple[int, ...] = ()  # multi-scale: an input side drawn per batch; () the input size
    box_loss: str = "giou"  # or "ciou"
    mixup: float = 0.0  # share of each batch's images blended with another of the batch
    canary: int = 0  # val images kept out when val trains too (model.data.sources.split_canary)
    compile: str = "off"  # torch.compile of the network and the loss: off, default, reduce-overhead
    command: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str, val_data: tuple[str, ...]) -> TrainConfig:
        augment = AugmentConfig.none() if args.no_augment else AugmentConfig(mosaic=args.mosaic)
        return cls(
            data=tuple(args.data),
            val_data=val_data,
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
            cache_side=args.cache_side,
            seed=args.seed,
            eval_every=args.eval_every,
            limit_train=args.limit_train,
            limit_val=args.limit_val,
            workers=args.workers,
            log_images=args.log_images,
            backbone_weights=args.backbone_weights,
            export=args.export,
            export_part_mib=args.export_part_mib,
            classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
            split_fraction=args.split_fraction,
            split_seed=args.split_seed,
            init_from=args.init_from,
            freeze_backbone=args.freeze_backbone,
            eval_at=tuple(60.0 * float(m) for m in args.eval_at.split(",")) if args.eval_at else (),
            bf16=args.bf16,
            channels_last=args.channels_last,
            scales=parse_scales(args.multi_scale),
            box_loss=args.box_loss,
            mixup=args.mixup,
            canary=args.canary,
            compile=args.compile,
            command=command,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples): what ``torch.load(weights_only=True)`` reads back."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        augment = values.pop("augment")
        augment_values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()
        }
        values["augment"] = AugmentConfig(**augment_values)
        for key in ("data", "val_data", "classes", "eval_at", "scales"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def parse_scales(text: str | None, step: int = 32) -> tuple[int, ...]:
    """``"320,512"`` -> every multiple of ``step`` from 320 to 512; None or "" -> ()."""
    if not text:
        return ()
    low, high = (int(v) for v in text.split(","))
    if low % step or high % step or not 0 < low <= high:
        raise ValueError(f"--multi-scale wants MIN,MAX, multiples of {step} with MIN <= MAX, not {text!r}")
    return tuple(range(low, high + 1, step))

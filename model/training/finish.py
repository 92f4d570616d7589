"""The end of a run: ``last.pt``, the final validation, TensorBoard images, the card, the export."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model import hardware
from model.config import DetectParams
from model.data import DetectionDataset, describe
from model.draw import draw_detections
from model.evaluation.report import EvaluationReport, evaluate_predictor
from model.network import GridDetector
from model.predictor import Predictor
from model.training.config import TrainConfig
from model.training.export import export_weights
from model.training.trainer import Trainer


def validate(
    network: GridDetector, val_set: DetectionDataset, device: torch.device, config: TrainConfig
) -> EvaluationReport:
    # float32 so that validating never changes the network's dtype.
    predictor = Predictor(network, device, dtype=torch.float32)
    return evaluate_predictor(
        predictor, val_set, batch_size=32, workers=config.workers, progress=False, limit=config.limit_val
    )


def log_val_images(
    writer: Any, network: GridDetector, val_set: DetectionDataset, device: torch.device, count: int, step: int
) -> None:
    predictor = Predictor(network, device, dtype=torch.float32)
    for k in range(min(count, len(val_set))):
        image, _ = val_set[k]
        found = predictor(image, DetectParams(score_threshold=0.2))[0]
        writer.add_image(f"val/{k}", draw_detections(image, found, network.config.classes), step)


def make_card(trainer: Trainer, data_notes: list[str], init: dict[str, Any] | None) -> dict[str, Any]:
    config, detector, progress = trainer.config, trainer.detector, trainer.progress
    world, train_images = trainer.dist_info.world_size, len(trainer.bank)
    ema = trainer.ema is not None
    return {
        "data": list(config.data),
        "data_read": data_notes,
        "classes": list(detector.classes),
        "train_split": config.train_split,
        "val_split": config.val_split,
        "split_fraction": config.split_fraction,
        "split_seed": config.split_seed,
        "train_images": train_images,
        "train_objects": int((trainer.bank.labels >= 0).sum()),
        "command": config.command,
        "hardware": hardware.describe(trainer.device),
        "processes": world,
        "epochs": round(progress.images_seen / max(1, train_images), 2),
        "steps": progress.step,
        "input_size": detector.input_size,
        "stride": detector.stride,
        "levels": list(detector.strides),
        "level_split": detector.level_split if detector.stride8_level else None,
        "batch_size": config.batch_size * world,
        "lr": config.lr,
        "warmup": config.warmup,
        "weight_decay": config.weight_decay,
        "ema_decay": config.ema_decay if ema else None,
        "weights": "EMA" if ema else "last step",
        "augment": asdict(config.augment),
        "close_mosaic": config.close_mosaic,
        "multi_scale": list(config.scales) or None,
        "box_loss": config.box_loss,
        "compile": None
        if config.compile == "off"
        else config.compile
        if trainer.loss.compiled
        else f"{config.compile} (failed: trained eager)",
        "mixup": config.mixup,
        "canary": config.canary or None,  # val images kept out of training (val trained too)
        "freeze_backbone": config.freeze_backbone,
        "assignment": "centre + 2 nearest cells" if config.neighbours else "centre cell",
        "objectness_target": "IoU" if config.iou_objectness else "1",
        "time_budget_seconds": config.time_budget,
        "backbone_init": config.backbone_weights or ("--init-from" if init else "random (from scratch)"),
        "init_from": init,
        "training_seconds": round(progress.seconds, 1),
        "images_seen": progress.images_seen,
        "train_images_per_second": round(progress.images_seen / max(progress.seconds, 1e-9), 2),
        "val_during_training": progress.evaluations,
        "seed": config.seed,
    }


def finish(
    trainer: Trainer,
    out: Path,
    val_set: DetectionDataset | None,
    data_notes: list[str],
    init: dict[str, Any] | None,
) -> None:
    config, progress = trainer.config, trainer.progress
    card = make_card(trainer, data_notes, init)
    if val_set is not None:
        card["val_data"] = describe(val_set)
    torch.save(trainer.checkpoint(card), out / "last.pt")
    if val_set is not None:
        report = validate(trainer.evaluated, val_set, trainer.device, config)
        trainer.writer.add_scalar("val/map50", report.result.map50, progress.step)
        log_val_images(
            trainer.writer, trainer.evaluated, val_set, trainer.device, config.log_images, progress.step
        )
        weights = "EMA weights" if trainer.ema is not None else "last weights"
        print(
            f"final val mAP@0.5 {report.result.map50:.4f} ({report.images} images, {weights}, "
            f"{progress.seconds:.0f} s of training)",
            flush=True,
        )
    trainer.writer.close()
    if config.export:
        export_weights(
            trainer.evaluated,
            Path(config.export),
            card,
            val_set,
            part_mib=config.export_part_mib,
            limit_val=config.limit_val,
            workers=config.workers,
        )

"""What a run starts from: processes and device, arithmetic, the image bank, the network's first weights.

``--init-from`` (:func:`initial_network`) starts from an exported weights folder: every tensor that
fits is loaded, layers the new architecture adds start fresh, and the head's class channels are
carried over by class name (those of new names start fresh), so a model fine-tuned on other
classes keeps the shipped box and objectness channels.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from model import hardware
from model.checkpoint import load_weights
from model.config import DetectorConfig
from model.data import DetectionDataset, open_dataset, split_canary
from model.data.pack import INDEX_FILE, decode_packed, is_pack, read_pack
from model.network import BOX_CHANNELS, GridDetector, build_network
from model.training.augment import ImageBank, build_bank
from model.training.config import TrainConfig


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
        return Distributed(), hardware.resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return Distributed(dist.get_rank(), world_size, local_rank), device


@dataclass(frozen=True)
class Precision:
    """bf16 autocast and channels_last, both on for CUDA and for a CPU with native bf16 under
    ``auto`` (docs/training.md, "Ablations", has the measurement); off where bf16 is emulated."""

    autocast: AbstractContextManager[Any]
    memory_format: torch.memory_format

    @classmethod
    def choose(cls, device: torch.device, bf16: str, channels_last: str) -> Precision:
        fast = device.type == "cuda" or hardware.cpu_has_bf16()
        use_bf16 = bf16 == "on" or (bf16 == "auto" and fast)
        use_cl = channels_last == "on" or (channels_last == "auto" and fast)
        autocast: AbstractContextManager[Any] = (
            torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
        )
        return cls(autocast, torch.channels_last if use_cl else torch.contiguous_format)


def training_data(
    config: TrainConfig, classes: Sequence[str] | None
) -> tuple[DetectionDataset | None, tuple[str, ...]]:
    """The training split of every ``--data`` that is not a pack, opened once, and the class list:
    ``classes`` when given (``--classes``, or a resumed run's), else the data's, else the first pack's."""
    others = [root for root in config.data if not is_pack(root)]
    dataset = (
        open_dataset(others, config.train_split, classes, config.split_fraction, config.split_seed)
        if others
        else None
    )
    if dataset is not None and config.canary:  # the val split trains too, less its canary
        val = open_dataset(
            config.val_data, config.val_split, dataset.classes, config.split_fraction, config.split_seed
        )
        rest, _ = split_canary(val, config.canary)
        dataset = DetectionDataset(
            dataset.records + rest.records, dataset.classes, f"{dataset.description} + {rest.description}"
        )
    if classes:
        return dataset, tuple(classes)
    if dataset is not None:
        return dataset, dataset.classes
    first_pack = next(Path(root) for root in config.data if is_pack(root))
    return None, tuple(json.loads((first_pack / INDEX_FILE).read_text())["classes"])


def load_bank(
    config: TrainConfig,
    dataset: DetectionDataset | None,
    classes: Sequence[str],
    device: torch.device,
    canvas: int,
) -> tuple[ImageBank, list[str]]:
    """Every training image (the packs of ``config.data``, then ``dataset``) decoded once into a uint8
    bank on ``device`` (:mod:`model.training.augment`), and a line per source saying what was read."""
    images: list[Tensor] = []
    boxes: list[Tensor] = []
    labels: list[Tensor] = []
    notes: list[str] = []
    for root in config.data:
        if is_pack(root):
            packed = read_pack(root, classes)
            images += decode_packed(packed, device)
            boxes += [item.boxes_xyxy for item in packed]
            labels += [item.labels for item in packed]
            notes.append(f"{root} (pack): {len(packed)} images")
    if dataset is not None:
        notes.append(dataset.description)
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
    return build_bank(images, boxes, labels, canvas), notes


def val_dataset(config: TrainConfig, classes: Sequence[str]) -> DetectionDataset | None:
    if not config.val_split or not config.val_data:
        return None
    val = open_dataset(config.val_data, config.val_split, classes, config.split_fraction, config.split_seed)
    return split_canary(val, config.canary)[1] if config.canary else val


def _head_of(network: GridDetector, name: str) -> nn.Sequential | None:
    head = getattr(network, name, None)
    return head if isinstance(head, nn.Sequential) else None


def _copy_final(
    source: nn.Conv2d, target: nn.Conv2d, source_classes: Sequence[str], target_classes: Sequence[str]
) -> None:
    """The box and objectness channels, and each class channel by name."""
    rows = list(range(BOX_CHANNELS + 1))
    source_rows = list(rows)
    for k, name in enumerate(target_classes):
        if name in source_classes:
            rows.append(BOX_CHANNELS + 1 + k)
            source_rows.append(BOX_CHANNELS + 1 + list(source_classes).index(name))
    with torch.no_grad():
        target.weight[rows] = source.weight[source_rows].to(target.weight.dtype)
        assert target.bias is not None and source.bias is not None
        target.bias[rows] = source.bias[source_rows].to(target.bias.dtype)


def transfer_weights(source: GridDetector, target: GridDetector) -> dict[str, Any]:
    """Copy into ``target`` every tensor of ``source`` that fits; returns what happened.

    Each head's last convolution is matched by role, not by key: its box and objectness channels
    are copied, and each class channel whose name both class lists have. A stride-8 head the
    source does not have starts as a copy of the source's stride-16 head (same shapes). Any other
    tensor with the same key but another shape is an error naming it.
    """
    source_finals = {
        f"{name}.{len(head) - 1}.{p}"
        for name in ("head", "fine_head")
        if (head := _head_of(source, name)) is not None
        for p in ("weight", "bias")
    }  # matched by role below, never by key
    source_state = {k: v for k, v in source.state_dict().items() if k not in source_finals}
    target_state = target.state_dict()
    heads = [name for name in ("head", "fine_head") if _head_of(target, name) is not None]
    # Where each head of the target takes its weights from: the source's head of that name, else its main one.
    origin = {name: name if _head_of(source, name) is not None else "head" for name in heads}
    final_keys: set[str] = set()
    for name in heads:
        head = _head_of(target, name)
        assert head is not None
        final_keys |= {f"{name}.{len(head) - 1}.{p}" for p in ("weight", "bias")}

    def source_key(key: str) -> str:
        name, rest = key.split(".", 1)
        return f"{origin[name]}.{rest}" if name in origin else key

    loaded, fresh, mismatched = [], [], []
    for key, value in target_state.items():
        if key in final_keys:
            continue
        mapped = source_key(key)
        if mapped not in source_state:
            fresh.append(key)
        elif source_state[mapped].shape != value.shape:
            mismatched.append(f"{key} {tuple(source_state[mapped].shape)} -> {tuple(value.shape)}")
        else:
            value.copy_(source_state[mapped])
            loaded.append(key)
    if mismatched:
        raise ValueError(
            "these tensors of the --init-from weights do not fit the new architecture: "
            + "; ".join(mismatched)
            + " (use the same --neck-channels and --head-hidden-channels, or leave them unset)"
        )
    source_classes, target_classes = source.config.classes, target.config.classes
    kept_classes = [name for name in target_classes if name in source_classes]
    notes = []
    for name in heads:
        target_head, source_head = _head_of(target, name), _head_of(source, origin[name])
        assert target_head is not None and source_head is not None
        source_final, target_final = source_head[-1], target_head[-1]
        assert isinstance(source_final, nn.Conv2d) and isinstance(target_final, nn.Conv2d)
        if source_final.in_channels == target_final.in_channels:
            _copy_final(source_final, target_final, source_classes, target_classes)
            if origin[name] != name:
                notes.append(f"{name} started as a copy of {origin[name]}")
        else:
            fresh += sorted(k for k in final_keys if k.startswith(f"{name}."))
            notes.append(f"{name}: head input width changed, its last convolution starts fresh")
    kept = f"{len(kept_classes)} of {len(target_classes)}"
    head_note = "; ".join([f"box and objectness channels kept; class channels kept for {kept}", *notes])
    used = {source_key(k) for k in target_state}
    unused = [k for k in source_state if k not in used]
    return {
        "tensors_loaded": len(loaded),
        "fresh": fresh,
        "unused": unused,
        "head": head_note,
        "classes_kept": kept_classes,
    }


def initial_network(
    config: TrainConfig, detector: DetectorConfig
) -> tuple[GridDetector, dict[str, Any] | None]:
    """The network a run starts from (random, a local backbone file, or ``--init-from`` weights)
    and, for ``--init-from``, what was carried over (recorded in the card)."""
    network = build_network(detector, config.backbone_weights)
    if not config.init_from:
        return network, None
    loaded = load_weights(config.init_from, expected_classes=None)
    report = transfer_weights(loaded.network, network)
    return network, {
        "weights": config.init_from,
        "name": loaded.config.name,
        "version": loaded.version,
        "classes": list(loaded.config.classes),
        "val_map50": loaded.card.get("card", {}).get("val", {}).get("map50"),
        **report,
    }


def architecture_from(init_from: str | None) -> dict[str, Any]:
    """The architecture an ``--init-from`` folder records (its card), for flags left unset."""
    if not init_from:
        return {}
    loaded = load_weights(init_from, expected_classes=None)
    return {
        "input_size": loaded.config.input_size,
        "neck_channels": loaded.config.neck_channels,
        "head_hidden_channels": loaded.config.head_hidden_channels,
        "stride8_level": loaded.config.stride8_level,
        "level_split": loaded.config.level_split,
    }

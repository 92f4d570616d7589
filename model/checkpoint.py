"""The shipped weights format: ``model.safetensors`` + ``model.json`` (the model card).

Loading checks the file's sha256 and the class list, rebuilds the network from the config the
card carries, and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.card import CARD_FILE, FORMAT, PARTS_FILE, WEIGHTS_FILE, WeightsError, file_sha256, read_card
from model.config import VOC_CLASSES, DetectorConfig, DetectParams
from model.network import GridDetector, build_network

__all__ = [
    "CARD_FILE",
    "FORMAT",
    "PARTS_FILE",
    "WEIGHTS_FILE",
    "LoadedWeights",
    "WeightsError",
    "file_sha256",
]


@dataclass(frozen=True)
class LoadedWeights:
    network: GridDetector  # float32, eval mode, on CPU
    config: DetectorConfig
    defaults: DetectParams
    sha256: str
    card: dict[str, Any]  # the whole model.json
    folder: Path | None = None  # where it was loaded from (derived files live beside it)

    @property
    def version(self) -> str:
        return self.sha256[:12]


def save_weights(
    folder: str | Path,
    network: GridDetector,
    card: dict[str, Any],
    defaults: DetectParams = DetectParams(),
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write ``model.safetensors`` (in ``dtype``) and ``model.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = network.config
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in network.state_dict().items()
    }
    weights_path = folder / WEIGHTS_FILE
    save_file(state, str(weights_path))
    weights_path.chmod(0o644)  # readable by the non-root user a container runs as
    meta = {
        "format": FORMAT,
        "name": config.name,
        "architecture": {
            "backbone": "torchvision resnet18 up to layer4",
            "stride": config.stride,
            "neck_channels": config.neck_channels,
            "head_hidden_channels": config.head_hidden_channels,
            "levels": list(config.strides),  # the grids' strides, finest first
            **(
                {
                    "stride8_level": True,
                    "level_split": config.level_split,
                    "output": "(B, 5 + C, N): each level's grid flattened row-major, finest first",
                }
                if config.stride8_level
                else {}
            ),
            "outputs_per_cell": "tx, ty, tw, th, objectness, class logits",
        },
        "classes": list(config.classes),
        "input_size": config.input_size,
        "normalization": {
            "mean": list(config.mean),
            "std": list(config.std),
            "letterbox": "centred, mean fill",
        },
        "decode": {
            "center": "s * (tanh(t) + cell + 0.5)",
            "size": "s * exp(t)",
            "score": "sigmoid(objectness) * softmax(class)",
            "nms": "class-aware (torchvision.ops.batched_nms)",
        },
        "thresholds": {
            "score": defaults.score_threshold,
            "iou": defaults.iou_threshold,
            "max_detections": defaults.max_detections,
        },
        "dtype": str(dtype).removeprefix("torch."),
        "sha256": file_sha256(weights_path),
        "card": card,
    }
    (folder / CARD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_weights(folder: str | Path, expected_classes: tuple[str, ...] | None = VOC_CLASSES) -> LoadedWeights:
    """Load a weights folder; raises :class:`WeightsError` naming the file and what is wrong."""
    card = read_card(folder, expected_classes)
    folder = Path(folder)
    weights_path = folder / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{weights_path}: unreadable safetensors file ({exc})") from exc
    network = build_network(card.config)
    try:
        network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise WeightsError(
            f"{weights_path}: tensors do not fit the architecture in {CARD_FILE} ({exc})"
        ) from exc
    network.eval()
    return LoadedWeights(
        network=network,
        config=card.config,
        defaults=card.defaults,
        sha256=card.sha256,
        card=card.card,
        folder=folder,
    )


def record_derived(folder: str | Path, key: str, block: dict[str, Any]) -> None:
    """Set a top-level ``key`` of a weights folder's ``model.json`` describing a file derived from
    the weights (the weights and their hash unchanged)."""
    path = Path(folder) / CARD_FILE
    meta = json.loads(path.read_text())
    meta[key] = block
    path.write_text(json.dumps(meta, indent=2) + "\n")


def write_card(folder: str | Path, card: dict[str, Any]) -> None:
    """Set the ``card`` of a weights folder's ``model.json`` (the weights and their hash unchanged)."""
    path = Path(folder) / CARD_FILE
    meta = json.loads(path.read_text())
    meta["card"] = card
    path.write_text(json.dumps(meta, indent=2) + "\n")


def split_weights(folder: str | Path, part_mib: float) -> list[Path]:
    """Replace ``model.safetensors`` by parts of at most ``part_mib`` MiB and a ``parts.json`` listing them.

    :func:`join_weights` puts the file back byte for byte; ``model.json`` is untouched.
    """
    folder = Path(folder)
    data = (folder / WEIGHTS_FILE).read_bytes()
    size = max(1, int(part_mib * 2**20))
    parts: list[Path] = []
    listing = []
    for index, first in enumerate(range(0, len(data), size)):
        chunk = data[first : first + size]
        path = folder / f"{WEIGHTS_FILE}.{index:03d}"
        path.write_bytes(chunk)
        parts.append(path)
        listing.append({"file": path.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "parts": listing}
    (folder / PARTS_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / WEIGHTS_FILE).unlink()
    return parts


def join_weights(folder: str | Path) -> Path:
    """Join the parts written by :func:`split_weights` (each checked) into ``model.safetensors``."""
    folder = Path(folder)
    manifest_path = folder / PARTS_FILE
    if not manifest_path.is_file():
        raise WeightsError(f"{manifest_path}: missing; nothing to join")
    manifest = json.loads(manifest_path.read_text())
    chunks: list[bytes] = []
    for part in manifest["parts"]:
        path = folder / part["file"]
        if not path.is_file():
            raise WeightsError(f"{path}: missing part ({len(manifest['parts'])} expected)")
        chunk = path.read_bytes()
        if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            raise WeightsError(
                f"{path}: sha256 does not match {PARTS_FILE}; the part is corrupt or truncated"
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise WeightsError(f"{folder}: the joined parts do not match {PARTS_FILE}'s sha256")
    target = folder / manifest["file"]
    target.write_bytes(data)
    target.chmod(0o644)
    for part in manifest["parts"]:
        (folder / part["file"]).unlink()
    manifest_path.unlink()
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m model.checkpoint join DIR``: join a split weights folder and check that it loads."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m model.checkpoint")
    commands = parser.add_subparsers(dest="command", required=True)
    join = commands.add_parser(
        "join", help="join model.safetensors from its parts and check the folder loads"
    )
    join.add_argument("folder")
    args = parser.parse_args(argv)
    target = join_weights(args.folder)
    loaded = load_weights(args.folder, expected_classes=None)
    print(f"joined {target} ({target.stat().st_size} bytes), version {loaded.version}: loads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

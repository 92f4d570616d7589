"""The weights folder read without torch: the model card (``model.json``), the hash of the weights
file, and the int8 network derived from them.

:func:`read_card` checks what :func:`model.checkpoint.load_weights` checks before it builds the
network (the card, the class list, the weights file's sha256); the torch-free path
(:mod:`model.arrays`) serves the int8 network that :func:`verified_int8` vouches for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model.config import DetectorConfig, DetectParams

FORMAT = "resnet18-grid-weights/1"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
PARTS_FILE = "parts.json"
INT8_KEY = "int8"  # the model.json entry describing the derived int8 network
INT8_XML = "model.int8.xml"
INT8_BIN = "model.int8.bin"


class WeightsError(ValueError):
    """The weights folder cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class WeightsCard:
    """A weights folder as its card describes it, the weights file's hash checked."""

    config: DetectorConfig
    defaults: DetectParams
    sha256: str  # of model.safetensors, as computed
    card: dict[str, Any]  # the whole model.json
    folder: Path | None = None  # where it was read from (derived files live beside it)

    @property
    def version(self) -> str:
        return self.sha256[:12]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(folder: str | Path, expected_classes: tuple[str, ...] | None = None) -> WeightsCard:
    """The card of a weights folder, its weights file's sha256 checked against it; raises
    :class:`WeightsError` naming the file and what is wrong."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    weights_path = folder / WEIGHTS_FILE
    if not card_path.is_file():
        raise WeightsError(
            f"{card_path}: missing model card; a weights folder holds {CARD_FILE} and {WEIGHTS_FILE}"
        )
    if not weights_path.is_file():
        hint = (
            f"; join its parts first: python -m model.checkpoint join {folder}"
            if (folder / PARTS_FILE).is_file()
            else ""
        )
        raise WeightsError(f"{weights_path}: missing weights file{hint}")
    try:
        meta = json.loads(card_path.read_text())
        config = DetectorConfig.from_dict(
            {
                **meta["architecture"],
                "name": meta["name"],
                "classes": meta["classes"],
                "input_size": meta["input_size"],
                "mean": meta["normalization"]["mean"],
                "std": meta["normalization"]["std"],
            }
        )
        expected_hash = str(meta["sha256"])
        thresholds = meta["thresholds"]
        defaults = DetectParams(
            score_threshold=float(thresholds["score"]),
            iou_threshold=float(thresholds["iou"]),
            max_detections=int(thresholds["max_detections"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{card_path}: unreadable model card ({type(exc).__name__}: {exc})") from exc
    if expected_classes is not None and tuple(config.classes) != tuple(expected_classes):
        raise WeightsError(
            f"{card_path}: class list {list(config.classes)} does not match the expected "
            f"{list(expected_classes)} (same names, same id order)"
        )
    actual_hash = file_sha256(weights_path)
    if actual_hash != expected_hash:
        raise WeightsError(
            f"{weights_path}: sha256 {actual_hash[:12]}... does not match {expected_hash[:12]}... "
            f"recorded in {CARD_FILE}; the file is corrupt, truncated or from another model"
        )
    return WeightsCard(config=config, defaults=defaults, sha256=actual_hash, card=meta, folder=folder)


class Described(Protocol):
    """What a loaded weights folder says of itself (:class:`WeightsCard`, or the torch path's
    :class:`model.checkpoint.LoadedWeights`)."""

    @property
    def sha256(self) -> str: ...
    @property
    def card(self) -> dict[str, Any]: ...
    @property
    def folder(self) -> Path | None: ...
    @property
    def version(self) -> str: ...


def verified_int8(weights: Described) -> Path | None:
    """The int8 network's ``.xml`` beside the weights when ``model.json`` describes one and every
    hash matches; None when there is none; :class:`WeightsError` when one is there but does not
    match (a changed file, or int8 files derived from other weights)."""
    block = weights.card.get(INT8_KEY)
    if not block or weights.folder is None:
        return None
    folder = weights.folder
    if block.get("source_sha256") != weights.sha256:
        raise WeightsError(
            f"{folder / INT8_XML}: derived from weights {str(block.get('source_sha256'))[:12]}..., "
            f"not these ({weights.version}); derive it again: "
            f"python -m model.quantize --weights {folder} --data VOCDEVKIT"
        )
    for name, key in ((INT8_XML, "xml_sha256"), (INT8_BIN, "bin_sha256")):
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{path}: missing, though {CARD_FILE} describes an int8 network")
        if file_sha256(path) != block.get(key):
            raise WeightsError(f"{path}: sha256 does not match the one recorded in {CARD_FILE}")
    return folder / INT8_XML

"""Export a trained network as a weights folder with its card, measured through the serving predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.checkpoint import load_weights, save_weights, split_weights, write_card
from model.data import DetectionDataset
from model.evaluation.report import card_val_block, evaluate_predictor, format_table
from model.network import GridDetector
from model.predictor import Predictor


def export_weights(
    network: GridDetector,
    folder: Path,
    card: dict[str, Any],
    val_set: DetectionDataset | None = None,
    part_mib: float | None = None,
    limit_val: int | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Write ``network`` (fp16) and its card to ``folder``; with ``val_set``, the card's val AP is
    measured on the written files as the service runs them (CPU: ONNX Runtime), so
    ``python -m model.evaluate`` on the same split gives the same figures. ``part_mib`` splits the
    weights file into parts for travel (``python -m model.checkpoint join`` restores it)."""
    save_weights(folder, network, card)
    if val_set is not None:
        loaded = load_weights(folder, expected_classes=network.config.classes)
        predictor = Predictor(loaded.network, "cpu", backend="auto")
        report = evaluate_predictor(
            predictor, val_set, batch_size=16, workers=workers, progress=False, limit=limit_val
        )
        card = {**card, "val": card_val_block(report, str(card.get("val_split")), predictor)}
        write_card(folder, card)
        print(format_table(report.result))
    if part_mib:
        parts = split_weights(folder, part_mib)
        print(f"weights split into {len(parts)} parts of at most {part_mib} MiB")
    print(f"exported -> {folder}")
    return card

"""Tiny random-init weights folders for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from model.checkpoint import save_weights
from model.config import VOC_CLASSES, DetectorConfig
from model.network import build_network

TINY_SIZE = 64


def make_weights(
    folder: Path,
    input_size: int = TINY_SIZE,
    objectness_bias: float | None = None,
    classes: Sequence[str] = VOC_CLASSES,
    **architecture: int | bool,
) -> Path:
    """A random-init weights folder; ``objectness_bias`` raises scores so detections appear
    (mostly ``person``, then ``dog``: their class logits are raised too). ``architecture``:
    :class:`DetectorConfig` fields (``neck_channels``, ``stride8_level``...)."""
    torch.manual_seed(0)
    config = DetectorConfig(classes=tuple(classes), input_size=input_size, **architecture)  # type: ignore[arg-type]
    network = build_network(config)
    heads = [network.head] + ([network.fine_head] if network.fine_head is not None else [])
    if objectness_bias is not None:
        with torch.no_grad():
            for head in heads:
                head[-1].bias[4] = objectness_bias
                if len(classes) > 14:
                    head[-1].bias[5 + 14] = 4.0
                    head[-1].bias[5 + 11] = 3.0
    return save_weights(folder, network, {"note": "random weights made by the tests"})


def add_ir(folder: Path) -> Path:
    """Beside a weights folder, the network as an OpenVINO IR recorded in the card where the int8
    network goes (fp32 here: deriving int8 needs NNCF and data), so that the numpy runtime, which
    serves only that file, can run tiny test weights."""
    import openvino as ov

    from model.backends.onnx_runtime import export_onnx
    from model.card import INT8_BIN, INT8_KEY, INT8_XML, file_sha256
    from model.checkpoint import load_weights, record_derived

    loaded = load_weights(folder, expected_classes=None)
    model = ov.Core().read_model(export_onnx(loaded.network, loaded.config.input_size), b"")
    ov.save_model(model, str(folder / INT8_XML), compress_to_fp16=False)
    block = {
        "xml": INT8_XML,
        "bin": INT8_BIN,
        "xml_sha256": file_sha256(folder / INT8_XML),
        "bin_sha256": file_sha256(folder / INT8_BIN),
        "source_sha256": loaded.sha256,
        "method": "fp32 IR standing in for the int8 network (tests)",
    }
    record_derived(folder, INT8_KEY, block)
    return folder

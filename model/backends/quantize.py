"""Deriving the int8 OpenVINO network from a weights folder (the command is ``python -m model.quantize``).

The network is exported from the folder's safetensors to ONNX (as the fp32 backends do), read by
OpenVINO and quantized with NNCF's post-training quantization (``MIXED`` preset: symmetric int8
weights, asymmetric int8 activations, fast bias correction), calibrated on training images taken
evenly from the split's list and prepared exactly as the service prepares uploads. It writes
``model.int8.xml`` / ``model.int8.bin`` beside the weights and records in ``model.json`` (key
``int8``) their sha256, the sha256 of the weights they came from, and the calibration settings
and tool versions; :func:`model.backends.openvino.verified_int8` serves them only when all match.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from model.backends.onnx_runtime import export_onnx
from model.backends.openvino import INT8_BIN, INT8_KEY, INT8_XML
from model.checkpoint import file_sha256, load_weights, record_derived
from model.data import open_dataset
from model.predictor import Predictor


def calibration_inputs(predictor: Predictor, data: Sequence[Path], split: str, count: int) -> list:
    """``count`` images spread evenly over the split, each a normalized ``(1, 3, S, S)`` array."""
    dataset = open_dataset(list(data), split, predictor.config.classes)
    step = max(1, len(dataset) // count)
    inputs = []
    for index in range(0, min(len(dataset), step * count), step):
        image, _ = dataset[index]
        batch, _ = predictor.preprocess([image])
        inputs.append(batch.numpy())
    return inputs


def quantize(folder: Path, data: Sequence[Path], split: str, count: int) -> dict[str, object]:
    import nncf
    import openvino as ov

    start = time.perf_counter()
    loaded = load_weights(folder, expected_classes=None)
    predictor = Predictor(loaded.network, "cpu", backend="eager")
    size = loaded.config.input_size
    inputs = calibration_inputs(predictor, data, split, count)
    model = ov.Core().read_model(export_onnx(predictor.network, size), b"")
    model.reshape({0: ov.PartialShape([-1, 3, size, size])})
    quantized = nncf.quantize(
        model,
        nncf.Dataset(inputs),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(inputs),
    )
    ov.save_model(quantized, str(folder / INT8_XML), compress_to_fp16=False)
    block: dict[str, object] = {
        "xml": INT8_XML,
        "bin": INT8_BIN,
        "xml_sha256": file_sha256(folder / INT8_XML),
        "bin_sha256": file_sha256(folder / INT8_BIN),
        "source_sha256": loaded.sha256,
        "calibration": {
            "split": split,
            "images": len(inputs),
            "selection": "every k-th image of the split's list, k = len(split) // images",
            "preprocessing": "the service's letterbox and normalization (Predictor.preprocess)",
        },
        "method": "NNCF post-training quantization, preset MIXED, subset_size = images",
        "tools": {"nncf": nncf.__version__, "openvino": ov.__version__},
        "seconds": round(time.perf_counter() - start, 1),
    }
    record_derived(folder, INT8_KEY, block)
    return block

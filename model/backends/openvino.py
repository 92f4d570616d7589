"""OpenVINO CPU backends.

- ``openvino`` / ``openvino-bf16``: the network exported to ONNX (as for ONNX Runtime), read by
  OpenVINO and compiled for the CPU in fp32 or in bf16 (``INFERENCE_PRECISION_HINT``, run on the
  AVX-512 BF16 / AMX units of CPUs that have them), derived at load time from the safetensors.
- ``openvino-int8``: the int8 network that :mod:`model.quantize` derived from the same weights
  and wrote beside them (``model.int8.xml/.bin``), served only when its hashes and the hash of
  the weights it came from match what ``model.json`` records (:func:`verified_int8`). It runs on
  the VNNI (or AMX) int8 units.

What serves is what ``python -m model.evaluate --backend ...`` measured.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from model.backends.onnx_runtime import export_onnx
from model.card import INT8_BIN, INT8_KEY, INT8_XML, verified_int8

__all__ = ["INT8_BIN", "INT8_KEY", "INT8_XML", "OpenVinoNetwork", "verified_int8"]

log = logging.getLogger(__name__)

Precision = Literal["f32", "bf16"]


class OpenVinoNetwork:
    """Callable like the network: normalized fp32 ``(B, 3, S, S)`` CPU batch -> raw fp32 grid."""

    def __init__(
        self,
        network: nn.Module,
        input_size: int,
        precision: Precision = "f32",
        threads: int = 0,
        onnx: bytes | None = None,
        ir: Path | None = None,
    ) -> None:
        import openvino as ov  # its import costs time; only when used

        start = time.perf_counter()
        core = ov.Core()
        if ir is not None:  # the derived int8 network; it carries its own precisions
            model = core.read_model(str(ir))
        else:
            model = core.read_model(onnx or export_onnx(network, input_size), b"")
        model.reshape({0: ov.PartialShape([-1, 3, input_size, input_size])})
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: batches come one at a time from the batcher
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self.precision = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        log.info(
            "network compiled by OpenVINO %s for CPU in %s (%s threads) in %.1f s",
            ov.__version__,
            "int8" if ir is not None else precision,
            config["INFERENCE_NUM_THREADS"],
            time.perf_counter() - start,
        )

    def __call__(self, batch: Tensor) -> Tensor:
        if batch.device.type != "cpu" or batch.dtype != torch.float32:
            raise ValueError(f"openvino takes float32 CPU batches, not {batch.dtype} on {batch.device}")
        result = self.request.infer({0: batch.contiguous().numpy()}, share_inputs=True)
        return torch.from_numpy(np.array(result[0], dtype=np.float32, copy=True))

"""The ``onnxruntime`` CPU backend: the network exported to ONNX in memory and run by ONNX Runtime.

Outputs equal eager's within 1e-4 (tested); the speed-up is measured by
tests/benchmarks/bench_forward.py (docs/benchmarks.md). The export happens at load time from the
same safetensors weights, so there is still one weights format and nothing extra to ship.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import onnxruntime as ort
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


def export_onnx(network: nn.Module, input_size: int) -> bytes:
    """``network`` (fp32, CPU) -> a serialized ONNX model with a dynamic batch dimension.

    A network of several levels flattens its grids into one output, a reshape the exporter would
    fix to this input's cell count; its input side is left dynamic too (a multiple of 32), so that
    the exported graph serves other input sides as a one-level graph does."""
    # A batch of 2 keeps the exporter from specialising the batch dimension to 1.
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims: dict[int, Any] = {0: batch}
    with torch.no_grad():
        if network(example[:1]).ndim == 3:  # (B, 5 + C, N): several levels (model.grid)
            side = 32 * torch.export.Dim("side", min=1, max=128)
            dims.update({2: side, 3: side})
    for name in ("onnxscript", "onnx_ir"):  # a dozen INFO lines per export about its own passes
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter warns about internals it handles itself
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["images"],
            output_names=["grid"],
            dynamic_shapes=(dims,),
            dynamo=True,
            optimize=True,  # constant folding and fusions, which ONNX Runtime runs markedly faster
            verbose=False,
        )
    assert program is not None
    return program.model_proto.SerializeToString()  # type: ignore[no-any-return]


class OnnxRuntimeNetwork:
    """Callable like the network: normalized fp32 ``(B, 3, S, S)`` CPU batch -> raw grid."""

    def __init__(self, network: nn.Module, input_size: int, threads: int = 0) -> None:
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle threads sleep instead of spinning: in the service they share the cores with
        # decoding and HTTP, and spinning cost more CPU time per image than it saved.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            export_onnx(network, input_size), options, providers=["CPUExecutionProvider"]
        )
        log.info(
            "network exported to ONNX and loaded by ONNX Runtime %s (%d threads) in %.1f s",
            ort.__version__,
            options.intra_op_num_threads,
            time.perf_counter() - start,
        )

    def __call__(self, batch: Tensor) -> Tensor:
        if batch.device.type != "cpu" or batch.dtype != torch.float32:
            raise ValueError(f"onnxruntime takes float32 CPU batches, not {batch.dtype} on {batch.device}")
        (grid,) = self.session.run(["grid"], {"images": batch.contiguous().numpy()})
        return torch.from_numpy(grid)

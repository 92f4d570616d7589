"""The ways the network can run, by one list of names and one factory.

- ``eager``: the module as it is (fp16 channels_last on CUDA, fp32 on CPU).
- ``jit``: traced and frozen by TorchScript (oneDNN-fused convolutions on CPU).
- ``onnxruntime``: exported to ONNX at load time and run by ONNX Runtime (:mod:`.onnx_runtime`).
- ``openvino`` / ``openvino-bf16``: the same export compiled by OpenVINO in fp32 or bf16.
- ``openvino-int8``: the int8 network derived offline by ``python -m model.quantize`` (:mod:`.quantize`).
- ``null``: a benchmark-only stand-in for the network (like Triton's identity models): it takes
  the same batch and gives a grid of the same shape at no cost, whose cells all score
  ``sigmoid(-10) / C``, so it finds nothing at any useful threshold. It measures the serving
  path around the network on any machine; ``auto`` never picks it.
- ``auto``: on CUDA eager; on CPU what :func:`auto_cpu_backend` picks.

docs/model.md ("Reduced precision on CPU") has the measured speed and accuracy of each.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from model import hardware

if TYPE_CHECKING:  # importing this module must not import torch: settings and fronts read the names
    import torch
    from torch import Tensor, nn

log = logging.getLogger(__name__)

Backend = Literal["auto", "eager", "jit", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8", "null"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
# Backends that run the network outside torch on CPU, in fp32 batches handed to them.
CPU_RUNTIMES: tuple[Backend, ...] = ("onnxruntime", "openvino", "openvino-bf16", "openvino-int8")
Runner = Callable[["Tensor"], "Tensor"]


def auto_cpu_backend(int8_available: bool) -> Backend:
    """What ``auto`` serves on a CPU: the derived int8 network where there is one and the CPU has
    int8 dot products (VNNI or AMX), else bf16 where the CPU runs it natively, else ONNX Runtime
    fp32. Without OpenVINO installed: ONNX Runtime."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "onnxruntime"
    if int8_available and hardware.cpu_has_int8_dot():
        return "openvino-int8"
    if hardware.cpu_has_bf16():
        return "openvino-bf16"
    return "onnxruntime"


def precision_of(backend: Backend, dtype: torch.dtype) -> str:
    """The arithmetic a backend runs the network in: fp32, bf16, fp16 or int8."""
    if backend == "openvino-bf16":
        return "bf16"
    if backend == "openvino-int8":
        return "int8"
    if backend == "null":
        return "none"
    return str(dtype).removeprefix("torch.").replace("float", "fp")


def _trace(network: nn.Module, example: Tensor) -> Runner:
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but kept working
        traced = torch.jit.trace(network, example)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    log.info("network traced and frozen for inference (backend jit)")
    return frozen  # type: ignore[no-any-return]


class NullNetwork:
    """The ``null`` backend: a grid of the network's output shape, objectness -10 everywhere."""

    def __init__(self, network: nn.Module, example: Tensor) -> None:
        import torch

        with torch.inference_mode():
            self.shape = tuple(network(example[:1]).shape[1:])  # (5 + C, H, W), read off the network once

    def __call__(self, batch: Tensor) -> Tensor:
        import torch

        grid = torch.zeros(batch.shape[0], *self.shape, device=batch.device, dtype=batch.dtype)
        grid[:, 4] = -10.0  # objectness: after the 4 box channels
        return grid


def build_runner(
    backend: Backend, network: nn.Module, example: Tensor, int8_ir: Path | None = None
) -> Runner:
    """A callable normalized batch -> raw grid for ``backend`` (not ``auto``: resolve it first).

    ``example`` is a batch of the input's shape, dtype, device and memory format.
    """
    import torch

    if backend in CPU_RUNTIMES and (example.device.type != "cpu" or example.dtype != torch.float32):
        raise ValueError(
            f"the {backend} backend takes float32 on CPU, not {example.dtype} on {example.device}"
        )
    size = example.shape[-1]
    if backend == "eager":
        return network
    if backend == "jit":
        return _trace(network, example)
    if backend == "null":
        return NullNetwork(network, example)
    if backend == "onnxruntime":
        from model.backends.onnx_runtime import OnnxRuntimeNetwork  # its import costs time: only when used

        return OnnxRuntimeNetwork(network, size)
    if backend in ("openvino", "openvino-bf16"):
        from model.backends.openvino import OpenVinoNetwork

        return OpenVinoNetwork(network, size, "bf16" if backend == "openvino-bf16" else "f32")
    if backend == "openvino-int8":
        from model.backends.openvino import OpenVinoNetwork

        if int8_ir is None:
            raise ValueError(
                "the openvino-int8 backend needs the int8 network derived from these weights; "
                "make it with: python -m model.quantize --weights WEIGHTS --data DATASET"
            )
        return OpenVinoNetwork(network, size, "f32", ir=int8_ir)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

"""The one prediction path used by the service, evaluation and drawing.

uint8 RGB images of any size -> letterbox -> normalize -> network -> decode -> score ->
threshold -> class-aware NMS -> boxes in original-image pixels.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from model.boxes import split_grid
from model.checkpoint import LoadedWeights, WeightsError, load_weights
from model.config import DetectorConfig, DetectParams
from model.letterbox import Fitted, Letterbox, letterbox_batch
from model.network import GridDetector
from model.postprocess import Detections, postprocess

log = logging.getLogger(__name__)

Backend = Literal["auto", "eager", "jit", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8"]
BACKENDS: tuple[Backend, ...] = (
    "auto",
    "eager",
    "jit",
    "onnxruntime",
    "openvino",
    "openvino-bf16",
    "openvino-int8",
)
# Backends that run the network outside torch on CPU, in fp32 batches handed to them.
CPU_RUNTIMES = ("onnxruntime", "openvino", "openvino-bf16", "openvino-int8")


def auto_cpu_backend(int8_available: bool) -> Backend:
    """What ``auto`` serves on a CPU (README: "Reduced precision on CPU" has the measurements):
    the derived int8 network where there is one and the CPU has int8 dot products (VNNI or AMX:
    3.8x ONNX Runtime fp32 here, val mAP@0.5 within 0.0003), else bf16 where the CPU runs it
    natively (2.0x, +0.0001), else ONNX Runtime fp32. Without OpenVINO installed: ONNX Runtime."""
    try:
        from model import openvino_backend
    except ImportError:
        return "onnxruntime"
    if int8_available and openvino_backend.cpu_supports_int8():
        return "openvino-int8"
    if openvino_backend.cpu_supports_bf16():
        return "openvino-bf16"
    return "onnxruntime"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first GPU when there is one, else CPU; otherwise ``cpu``/``cuda``/``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


class Predictor:
    """Runs a :class:`GridDetector` on uint8 ``(3, H, W)`` RGB images.

    On CUDA the network runs in float16 and channels_last; on CPU in float32 batches. Backends on
    CPU (tests/benchmarks/bench_forward.py and bench_precision.py measure them side by side):
    ``openvino-bf16`` compiles the network with OpenVINO to run in bf16 (2.0x ``onnxruntime`` on a
    CPU with native bf16, the same val mAP@0.5; outputs close to eager's, tested) and is what
    ``auto`` picks on such a CPU; ``onnxruntime`` exports the network to ONNX and runs it in ONNX
    Runtime, about 1.8-2.3x as fast as eager (outputs equal within 1e-4), what ``auto`` picks on
    other CPUs; ``openvino`` is OpenVINO in fp32; ``jit`` traces and freezes it (oneDNN-fused
    convolutions), 1.4-1.7x; ``eager`` runs the module as it is. On CUDA ``auto`` is eager.
    """

    def __init__(
        self,
        network: GridDetector,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        defaults: DetectParams = DetectParams(),
        backend: Backend = "eager",
        int8_ir: Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.config: DetectorConfig = network.config
        self.defaults = defaults
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.network = network.eval().to(device=self.device, dtype=self.dtype)
        self.network = self.network.to(memory_format=memory_format)  # type: ignore[call-overload]
        self._memory_format = memory_format
        if backend == "auto":
            backend = auto_cpu_backend(int8_ir is not None) if self.device.type == "cpu" else "eager"
        if backend in CPU_RUNTIMES and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ValueError(f"the {backend} backend takes float32 on CPU, not {self.dtype} on {device}")
        self.backend = backend
        self._run: Callable[[Tensor], Tensor] = self.network
        if backend == "jit":
            self._run = self._trace()
        elif backend == "onnxruntime":
            from model.onnx_runtime import OnnxRuntimeNetwork  # its import costs time; only when used

            self._run = OnnxRuntimeNetwork(self.network, self.config.input_size)
        elif backend in ("openvino", "openvino-bf16"):
            from model.openvino_backend import OpenVinoNetwork

            self._run = OpenVinoNetwork(
                self.network, self.config.input_size, "bf16" if backend == "openvino-bf16" else "f32"
            )
        elif backend == "openvino-int8":
            from model.openvino_backend import OpenVinoNetwork

            if int8_ir is None:
                raise ValueError(
                    "the openvino-int8 backend needs the int8 network derived from these weights; "
                    "make it with: python -m model.quantize --weights WEIGHTS --data VOCDEVKIT"
                )
            self._run = OpenVinoNetwork(self.network, self.config.input_size, "f32", ir=int8_ir)

    @property
    def precision(self) -> str:
        """The arithmetic the network runs in: fp32, bf16 or fp16."""
        if self.backend == "openvino-bf16":
            return "bf16"
        if self.backend == "openvino-int8":
            return "int8"
        return str(self.dtype).removeprefix("torch.").replace("float", "fp")

    def _trace(self) -> Callable[[Tensor], Tensor]:
        size = self.config.input_size
        example = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but kept working
            traced = torch.jit.trace(self.network, example.contiguous(memory_format=self._memory_format))
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        log.info("network traced and frozen for inference (backend jit)")
        return frozen  # type: ignore[no-any-return]

    @classmethod
    def from_weights(
        cls,
        folder: str | Path,
        device: str = "auto",
        dtype: torch.dtype | None = None,
        backend: Backend = "eager",
    ) -> tuple[Predictor, LoadedWeights]:
        loaded = load_weights(folder)
        device_ = resolve_device(device)
        int8_ir = None
        if device_.type == "cpu" and backend in ("auto", "openvino-int8") and loaded.card.get("int8"):
            try:
                from model.openvino_backend import verified_int8

                int8_ir = verified_int8(loaded)
            except ImportError:  # no OpenVINO here: auto serves ONNX Runtime
                int8_ir = None
            except WeightsError as exc:
                if backend == "openvino-int8":
                    raise
                log.warning("not serving the int8 network: %s", exc)
        predictor = cls(loaded.network, device_, dtype, loaded.defaults, backend, int8_ir)
        return predictor, loaded

    def preprocess(self, images: Sequence[Tensor | Fitted]) -> tuple[Tensor, list[Letterbox]]:
        """uint8 images -> normalized ``(B, 3, S, S)`` batch on the device, and each placement."""
        batch, placements = letterbox_batch(
            images, self.config.input_size, self.config.mean, self.config.std, self.device, self.dtype
        )
        return batch.contiguous(memory_format=self._memory_format), placements

    @torch.inference_mode()
    def forward(self, batch: Tensor) -> Tensor:
        """Normalized batch -> raw grid ``(B, 5 + C, S/32, S/32)``."""
        return self._run(batch)

    @torch.inference_mode()
    def __call__(
        self,
        images: Tensor | Sequence[Tensor | Fitted],
        params: DetectParams | Sequence[DetectParams] | None = None,
    ) -> list[Detections]:
        """Detect objects in one image or a list (full images, or :class:`Fitted` ones); ``params``
        per image or shared (default: the card's)."""
        if isinstance(images, Tensor) and images.ndim == 3:
            images = [images]
        images = list(images)
        if not images:
            return []
        if params is None:
            params = self.defaults
        per_image = [params] * len(images) if isinstance(params, DetectParams) else list(params)
        if len(per_image) != len(images):
            raise ValueError(f"got {len(per_image)} parameter sets for {len(images)} images")
        batch, placements = self.preprocess(images)
        output = split_grid(self.forward(batch), self.config.stride)
        return postprocess(output, placements, per_image)

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
from model.checkpoint import LoadedWeights, load_weights
from model.config import DetectorConfig, DetectParams
from model.letterbox import Fitted, Letterbox, letterbox_batch
from model.network import GridDetector
from model.postprocess import Detections, postprocess

log = logging.getLogger(__name__)

Backend = Literal["auto", "eager", "jit", "onnxruntime"]
BACKENDS: tuple[Backend, ...] = ("auto", "eager", "jit", "onnxruntime")


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

    On CUDA the network runs in float16 and channels_last; on CPU in float32. Backends on CPU
    (tests/benchmarks/bench_forward.py measures them side by side; outputs equal eager's within
    1e-4, tested): ``onnxruntime`` exports the network to ONNX and runs it in ONNX Runtime, about
    1.8-2.3x as fast as eager, and is what ``auto`` picks; ``jit`` traces and freezes it (oneDNN-fused
    convolutions), 1.4-1.7x; ``eager`` runs the module as it is. On CUDA ``auto`` is eager.
    """

    def __init__(
        self,
        network: GridDetector,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        defaults: DetectParams = DetectParams(),
        backend: Backend = "eager",
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
            backend = "onnxruntime" if self.device.type == "cpu" else "eager"
        if backend == "onnxruntime" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ValueError(f"the onnxruntime backend runs float32 on CPU, not {self.dtype} on {device}")
        self.backend = backend
        self._run: Callable[[Tensor], Tensor] = self.network
        if backend == "jit":
            self._run = self._trace()
        elif backend == "onnxruntime":
            from model.onnx_runtime import OnnxRuntimeNetwork  # its import costs time; only when used

            self._run = OnnxRuntimeNetwork(self.network, self.config.input_size)

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
        predictor = cls(loaded.network, resolve_device(device), dtype, loaded.defaults, backend)
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

"""The one prediction path used by the service, evaluation and drawing.

uint8 RGB images of any size -> letterbox -> normalize -> network -> decode -> score ->
threshold -> class-aware NMS -> boxes in original-image pixels.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.arrays.predictor import ArrayPredictor
from model.backends import Backend, Runner, auto_cpu_backend, build_runner, precision_of
from model.boxes import split_grid
from model.calibration import Calibration
from model.checkpoint import LoadedWeights, WeightsError, load_weights
from model.config import DetectorConfig, DetectParams, params_per_image
from model.hardware import resolve_device
from model.letterbox import Fitted, Letterbox, fit_on_cpu, fit_stored, letterbox_batch, letterbox_fitted_batch
from model.network import GridDetector
from model.postprocess import Detections, postprocess

log = logging.getLogger(__name__)


class Predictor:
    """Runs a :class:`GridDetector` on uint8 ``(3, H, W)`` RGB images.

    On CUDA the network runs in float16 and channels_last; on CPU in float32 batches, through the
    backend named by ``backend`` (:mod:`model.backends`; ``auto`` resolves there).
    """

    runtime = "torch"

    def __init__(
        self,
        network: GridDetector,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        defaults: DetectParams = DetectParams(),
        backend: Backend = "eager",
        int8_ir: Path | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.config: DetectorConfig = network.config
        self.defaults = defaults
        self.calibration = calibration  # scores that mean precision (model.calibration), or raw
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.network = network.eval().to(device=self.device, dtype=self.dtype)
        self.network = self.network.to(memory_format=memory_format)  # type: ignore[call-overload]
        self._memory_format = memory_format
        self._staging: Tensor | None = None  # pinned uint8 canvas for one copy per batch (CUDA)
        self._copied: Any = None  # CUDA event: the staging buffer's last copy is done
        if backend == "auto":
            backend = auto_cpu_backend(int8_ir is not None) if self.device.type == "cpu" else "eager"
        self.backend: Backend = backend
        size = self.config.input_size
        example = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        self._run: Runner = build_runner(
            backend, self.network, example.contiguous(memory_format=memory_format), int8_ir
        )

    @property
    def precision(self) -> str:
        """The arithmetic the network runs in: fp32, bf16, fp16 or int8."""
        return precision_of(self.backend, self.dtype)

    @classmethod
    def from_weights(
        cls,
        folder: str | Path,
        device: str = "auto",
        dtype: torch.dtype | None = None,
        backend: Backend = "eager",
        defaults: DetectParams | None = None,
        calibrated: bool = True,
        input_size: int | None = None,
    ) -> tuple[Predictor, LoadedWeights]:
        """The predictor of a weights folder (any class list: callers follow its card); ``defaults``
        replace the card's thresholds; ``calibrated``: the card's score calibration, if it has one;
        ``input_size`` replaces the card's (a multiple of 32: the network is fully convolutional)."""
        loaded = load_weights(folder, expected_classes=None)  # everything downstream follows the card
        if input_size:
            loaded.network.config = dataclasses.replace(loaded.config, input_size=input_size)
        device_ = resolve_device(device)
        int8_ir = None
        if device_.type == "cpu" and backend in ("auto", "openvino-int8") and loaded.card.get("int8"):
            try:
                from model.backends.openvino import verified_int8

                int8_ir = verified_int8(loaded)
            except ImportError:  # no OpenVINO here: auto serves ONNX Runtime
                int8_ir = None
            except WeightsError as exc:
                if backend == "openvino-int8":
                    raise
                log.warning("not serving the int8 network: %s", exc)
        calibration = Calibration.from_card(loaded.card, loaded.config.classes) if calibrated else None
        predictor = cls(
            loaded.network, device_, dtype, defaults or loaded.defaults, backend, int8_ir, calibration
        )
        return predictor, loaded

    def fit(
        self, pixels: np.ndarray, orientation: int = 1, stored_size: tuple[int, int] | None = None
    ) -> Fitted:
        """uint8 ``(H, W, 3)`` as stored, EXIF ``orientation`` -> fitted to the input, as a viewer
        shows it (what the service keeps of an upload while it waits for the network): on the CPU
        the numpy runtime's fit, on a GPU torchvision's faster resize."""
        if self.device.type == "cpu":
            return fit_on_cpu(pixels, orientation, self.config.input_size, stored_size)
        return fit_stored(pixels, orientation, self.config.input_size, stored_size)

    def preprocess(self, images: Sequence[Tensor | Fitted]) -> tuple[Tensor, list[Letterbox]]:
        """uint8 images -> normalized ``(B, 3, S, S)`` batch on the device, and each placement. On
        a GPU, images fitted already (what the service hands over) go in one copy from pinned memory."""
        size = self.config.input_size
        if self.device.type == "cuda" and all(isinstance(image, Fitted) for image in images):
            if self._copied is not None:  # the last batch's copy out of the staging buffer is done
                self._copied.synchronize()
            if self._staging is None or self._staging.shape[0] < len(images):
                self._staging = torch.empty(len(images), 3, size, size, dtype=torch.uint8).pin_memory()
            fitted = [image for image in images if isinstance(image, Fitted)]
            batch, placements = letterbox_fitted_batch(
                fitted, size, self.config.mean, self.config.std, self.device, self.dtype, self._staging
            )
            self._copied = torch.cuda.Event()
            self._copied.record()
            return batch.contiguous(memory_format=self._memory_format), placements
        batch, placements = letterbox_batch(
            images, size, self.config.mean, self.config.std, self.device, self.dtype
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
        per_image = params_per_image(params, self.defaults, len(images))
        batch, placements = self.preprocess(images)
        flipped = [k for k, p in enumerate(per_image) if p.flip]
        if flipped:  # flip test-time augmentation: their mirror images after the batch
            batch = torch.cat([batch, batch[flipped].flip(-1)])
        output = split_grid(self.forward(batch), self.config.strides)
        return postprocess(output, placements, per_image, self.calibration)


class TensorView:
    """The torch-free :class:`~model.arrays.predictor.ArrayPredictor` seen through torch: it takes
    uint8 ``(3, H, W)`` tensors and gives :class:`Detections` of tensors, so that evaluation scores
    the CPU image's path with the same code as every other."""

    def __init__(self, inner: ArrayPredictor) -> None:
        self.inner = inner
        self.config = inner.config
        self.defaults = inner.defaults
        self.device = inner.device
        self.backend = inner.backend
        self.precision = inner.precision
        self.runtime = inner.runtime
        self.calibration = inner.calibration

    def __call__(
        self,
        images: Tensor | Sequence[Tensor],
        params: DetectParams | Sequence[DetectParams] | None = None,
    ) -> list[Detections]:
        if isinstance(images, Tensor) and images.ndim == 3:
            images = [images]
        arrays = [image.permute(1, 2, 0).numpy() for image in images]  # (H, W, 3) views
        return [
            Detections(torch.from_numpy(f.boxes_xyxy), torch.from_numpy(f.scores), torch.from_numpy(f.labels))
            for f in self.inner(arrays, params)
        ]

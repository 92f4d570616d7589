"""The torch-free predictor: uint8 RGB images -> fit -> normalize -> OpenVINO network -> numpy
post-processing -> boxes in original-image pixels.

It keeps :class:`model.predictor.Predictor`'s contract (the same calls, parameters and result
fields) so that the service and ``python -m model.evaluate --runtime numpy`` drive either.
Backends: ``openvino-int8`` (the derived int8 network, whose hashes must match the card; what
``auto`` is here) and ``null`` (the benchmark stand-in of :mod:`model.backends`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.arrays.fitting import fit_array
from model.arrays.postprocess import ArrayDetections, postprocess
from model.calibration import Calibration
from model.card import WeightsCard, WeightsError, read_card, verified_int8
from model.config import BOX_CHANNELS, DetectorConfig, DetectParams, params_per_image
from model.geometry import Fitted, Letterbox, letterbox_geometry

log = logging.getLogger(__name__)

ARRAY_BACKENDS = ("openvino-int8", "null")


def _normalization_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(3, 256)`` float32: each channel's normalized value of each uint8 level, computed in the
    torch path's order, ``(v / 255 - mean) / std``, so the values are the same."""
    levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)
    return (levels - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


class ArrayPredictor:
    """Runs the int8 network through OpenVINO on uint8 ``(H, W, 3)`` RGB images, without torch."""

    runtime = "numpy"
    device = "cpu"
    dtype = "float32"  # what the network is handed

    def __init__(
        self,
        config: DetectorConfig,
        ir: Path | None,
        defaults: DetectParams = DetectParams(),
        backend: str = "openvino-int8",
        threads: int = 0,
        calibration: Calibration | None = None,
    ) -> None:
        if backend not in ARRAY_BACKENDS:
            raise ValueError(
                f"the numpy runtime serves {' or '.join(ARRAY_BACKENDS)}, not {backend!r}; "
                "the other backends need torch (DETECTOR_RUNTIME=torch)"
            )
        self.config = config
        self.defaults = defaults
        self.calibration = calibration  # scores that mean precision (model.calibration), or raw
        self.backend = backend
        self.precision = "int8" if backend == "openvino-int8" else "none"
        self._table = _normalization_table(config.mean, config.std)
        size = config.input_size
        channels = BOX_CHANNELS + 1 + config.num_classes
        sides = [size // stride for stride in config.strides]
        self._null_shape: tuple[int, ...] = (
            (channels, sides[0], sides[0]) if len(sides) == 1 else (channels, sum(n * n for n in sides))
        )
        self._request = None
        if backend == "openvino-int8":
            if ir is None:
                raise ValueError("the openvino-int8 backend needs the int8 network (model.int8.xml)")
            import openvino as ov  # its import costs time; only when used

            start = time.perf_counter()
            core = ov.Core()
            model = core.read_model(str(ir))
            model.reshape({0: ov.PartialShape([-1, 3, size, size])})
            threads = threads or len(os.sched_getaffinity(0))
            compiled = core.compile_model(
                model,
                "CPU",
                # f32 for the layers left unquantized, as on the torch path (OpenVINO would pick bf16
                # on CPUs that have it, which moves scores by a few thousandths).
                {
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": threads,
                    "INFERENCE_PRECISION_HINT": "f32",
                },
            )
            self._request = compiled.create_infer_request()
            log.info(
                "int8 network compiled by OpenVINO %s for CPU (%d threads) in %.1f s, without torch",
                ov.__version__,
                threads,
                time.perf_counter() - start,
            )

    @classmethod
    def from_weights(
        cls,
        folder: str | Path,
        backend: str = "auto",
        defaults: DetectParams | None = None,
        threads: int = 0,
        calibrated: bool = True,
        input_size: int | None = None,
    ) -> tuple[ArrayPredictor, WeightsCard]:
        """The predictor of a weights folder and its card; ``defaults`` replace the card's
        thresholds; ``calibrated``: the card's score calibration, if it has one; ``input_size``
        replaces the card's (a multiple of 32)."""
        weights = read_card(folder)
        config = dataclasses.replace(weights.config, input_size=input_size) if input_size else weights.config
        backend = "openvino-int8" if backend == "auto" else backend
        ir = verified_int8(weights) if backend == "openvino-int8" else None
        if backend == "openvino-int8" and ir is None:
            raise WeightsError(
                f"{folder}: no int8 network beside the weights, which is what serves without torch; "
                "derive it where the quantize extra is installed (pip install '.[quantize]'): "
                f"python -m model.quantize --weights {folder} --data DATASET, or serve the GPU image"
            )
        calibration = Calibration.from_card(weights.card, config.classes) if calibrated else None
        return cls(config, ir, defaults or weights.defaults, backend, threads, calibration), weights

    def fit(
        self, pixels: np.ndarray, orientation: int = 1, stored_size: tuple[int, int] | None = None
    ) -> Fitted:
        """uint8 ``(H, W, 3)`` as stored, EXIF ``orientation`` -> fitted to the input (:mod:`.fitting`)."""
        return fit_array(pixels, orientation, self.config.input_size, stored_size)

    def preprocess(self, images: Sequence[np.ndarray | Fitted]) -> tuple[np.ndarray, list[Letterbox]]:
        """uint8 images -> normalized float32 ``(B, 3, S, S)`` batch (border 0, the mean), and each
        placement."""
        size = self.config.input_size
        batch = np.empty((len(images), 3, size, size), dtype=np.float32)  # each border zeroed below
        placements: list[Letterbox] = []
        for k, item in enumerate(images):
            fitted = item if isinstance(item, Fitted) else self.fit(item)
            pixels = fitted.pixels
            if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3:
                raise ValueError(f"expected uint8 (H, W, 3) RGB pixels, got {type(pixels).__name__}")
            new_h, new_w, placement = letterbox_geometry(fitted.height, fitted.width, size)
            if pixels.shape != (new_h, new_w, 3):
                raise ValueError(
                    f"fitted {pixels.shape} is not {fitted.height}x{fitted.width} fitted to {size}"
                )
            top, left = int(placement.pad_y), int(placement.pad_x)
            batch[k, :, :top] = 0.0  # the border: the mean, 0 once normalized
            batch[k, :, top + new_h :] = 0.0
            batch[k, :, top : top + new_h, :left] = 0.0
            batch[k, :, top : top + new_h, left + new_w :] = 0.0
            for channel in range(3):  # a table look-up per channel, into the batch
                np.take(
                    self._table[channel],
                    pixels[:, :, channel],
                    out=batch[k, channel, top : top + new_h, left : left + new_w],
                )
            placements.append(placement)
        return batch, placements

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Normalized batch -> raw head output (``(B, 5 + C, H, W)``, or ``(B, 5 + C, N)`` with
        two levels: :mod:`model.grid`) float32."""
        if self._request is None:  # null: nothing found at any useful threshold
            grid = np.zeros((batch.shape[0], *self._null_shape), dtype=np.float32)
            grid[:, BOX_CHANNELS] = -10.0
            return grid
        result = self._request.infer({0: batch}, share_inputs=True)
        return np.array(result[0], dtype=np.float32, copy=True)

    def __call__(
        self,
        images: np.ndarray | Sequence[np.ndarray | Fitted],
        params: DetectParams | Sequence[DetectParams] | None = None,
    ) -> list[ArrayDetections]:
        """Detect objects in one image or a list (full ``(H, W, 3)`` images, or :class:`Fitted`);
        ``params`` per image or shared (default: the card's)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = list(images)
        if not images:
            return []
        per_image = params_per_image(params, self.defaults, len(images))
        batch, placements = self.preprocess(images)
        flipped = [k for k, p in enumerate(per_image) if p.flip]
        if flipped:  # flip test-time augmentation: their mirror images after the batch
            batch = np.concatenate([batch, batch[flipped][..., ::-1]])
        return postprocess(self.forward(batch), self.config.strides, placements, per_image, self.calibration)

"""Which prediction path serves: torch (:class:`model.predictor.Predictor`, every backend and
device) or numpy (:class:`model.arrays.predictor.ArrayPredictor`, the int8 network on the CPU,
without torch installed).

``auto`` is torch where torch is installed and numpy where it is not (the CPU image), so one
setting (``DETECTOR_RUNTIME``) serves both images. Importing this module imports neither torch
nor OpenVINO.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from model.card import Described
from model.config import DetectorConfig, DetectParams
from model.geometry import Fitted

Runtime = Literal["auto", "torch", "numpy"]
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)


class Found(Protocol):
    """One image's detections: ``boxes_xyxy`` ``(N, 4)`` original pixels, ``scores`` ``(N,)``,
    ``labels`` ``(N,)``, as torch tensors or numpy arrays (both convert with ``numpy.asarray``)."""

    @property
    def boxes_xyxy(self) -> Any: ...
    @property
    def scores(self) -> Any: ...
    @property
    def labels(self) -> Any: ...
    def __len__(self) -> int: ...


class ServingPredictor(Protocol):
    """What the service needs of a predictor, whichever path it is."""

    config: DetectorConfig
    defaults: DetectParams
    backend: Any
    runtime: str
    calibration: Any  # model.calibration.Calibration, or None: raw scores

    @property
    def device(self) -> Any: ...
    @property
    def dtype(self) -> Any: ...
    @property
    def precision(self) -> str: ...
    def fit(
        self, pixels: Any, orientation: int = 1, stored_size: tuple[int, int] | None = None
    ) -> Fitted: ...
    def __call__(self, images: Any, params: DetectParams | Sequence[DetectParams] | None = None) -> Any: ...


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def resolve_runtime(runtime: Runtime) -> Literal["torch", "numpy"]:
    if runtime == "auto":
        return "torch" if torch_installed() else "numpy"
    if runtime == "torch" and not torch_installed():
        raise ValueError(
            "DETECTOR_RUNTIME=torch, but torch is not installed here (the CPU image serves without "
            "it); use DETECTOR_RUNTIME=auto or numpy, or the GPU image"
        )
    return runtime


def open_predictor(
    folder: str | Path,
    device: str = "auto",
    backend: str = "auto",
    defaults: DetectParams | None = None,
    runtime: Runtime = "auto",
    threads: int = 0,
    calibrated: bool = True,
    input_size: int | None = None,
) -> tuple[ServingPredictor, Described]:
    """The serving predictor of a weights folder and what the folder says of itself;
    ``calibrated``: scores through the card's calibration where it has one."""
    chosen = resolve_runtime(runtime)
    if chosen == "numpy":
        if device not in ("auto", "cpu"):
            raise ValueError(
                f"DETECTOR_DEVICE={device} needs torch; the numpy runtime runs on the CPU "
                "(use the GPU image, or DETECTOR_DEVICE=cpu)"
            )
        from model.arrays.predictor import ArrayPredictor

        return ArrayPredictor.from_weights(folder, backend, defaults, threads, calibrated, input_size)
    from model.predictor import Predictor

    backend_name: Any = backend  # checked against model.backends.BACKENDS by the settings
    return Predictor.from_weights(folder, device, None, backend_name, defaults, calibrated, input_size)

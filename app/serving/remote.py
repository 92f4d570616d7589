"""A front's stand-in for the predictor: fits on the CPU here, detects in the engine process.

:class:`RemotePredictor` keeps the predictor's contract (:class:`model.runtime.ServingPredictor`),
so the front's batcher, warm-up and routes run unchanged. It fits images with Pillow
(:func:`model.arrays.fitting.fit_array`, what the numpy runtime does: no torch here), writes a
batch's fitted pixels into a shared-memory block of its own, and sends the engine
(:mod:`app.serving.engine`) their places and parameters over a Unix socket; the answer is the
detections. One batch at a time per front (the batcher runs one), so one block suffices. When the
engine is gone every call raises :class:`EngineGone`, which the batcher turns into a 503, and
``on_lost`` is told once (the front's readiness turns failed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Client, Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from model.arrays.fitting import fit_array
from model.arrays.postprocess import ArrayDetections
from model.config import DetectorConfig, DetectParams, params_per_image
from model.geometry import Fitted

KEY_VARIABLE = "DETECTOR_ENGINE_KEY"  # the hex key a front proves itself with, set by the launcher


class EngineGone(RuntimeError):
    """The inference engine process does not answer any more."""


class RemotePredictor:
    """The engine's predictor, seen from a front."""

    def __init__(
        self,
        socket: str | Path,
        key: bytes,
        max_batch_size: int,
        on_lost: Callable[[str], None] | None = None,
        answer_timeout_s: float = 30.0,
    ) -> None:
        self._connection: Connection = Client(str(socket), family="AF_UNIX", authkey=key)
        self._lock = threading.Lock()
        self._on_lost = on_lost
        self._lost: str | None = None
        # A hung engine must not hang the front: past this, it counts as gone (readiness fails,
        # the orchestrator restarts the service).
        self.answer_timeout_s = answer_timeout_s
        self._memory: SharedMemory | None = None
        try:
            self._connection.send(("info",))
            info = self._expect("info")
            # The block holds a whole batch of fitted images at the engine's input side.
            side = int(info["config"]["input_size"])
            self._memory = SharedMemory(create=True, size=max_batch_size * side * side * 3)
            self._connection.send(("memory", self._memory.name))
            self._expect("ok")
        except (EOFError, OSError) as exc:
            self.close()
            raise EngineGone(f"the inference engine did not answer ({exc})") from exc
        self.config = DetectorConfig.from_dict(info["config"])
        self.defaults: DetectParams = info["defaults"]
        self.backend: str = info["backend"]
        self.runtime: str = info["runtime"]  # the engine's: what runs the network
        self.remote = True  # this process only fits; the engine detects
        self.calibration: Any = info["calibration"]
        self.engine_pid: int = info["pid"]
        self._precision: str = info["precision"]
        self._device: str = info["device"]
        self._dtype: str = info["dtype"]

    def _expect(self, kind: str) -> Any:
        got, body = self._connection.recv()
        if got != kind:
            raise EngineGone(f"the inference engine answered {got!r}: {body}")
        return body

    @property
    def device(self) -> str:
        return self._device

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def precision(self) -> str:
        return self._precision

    def fit(self, pixels: Any, orientation: int = 1, stored_size: tuple[int, int] | None = None) -> Fitted:
        return fit_array(pixels, orientation, self.config.input_size, stored_size)

    def __call__(
        self,
        images: Sequence[np.ndarray | Fitted],
        params: DetectParams | Sequence[DetectParams] | None = None,
    ) -> list[ArrayDetections]:
        fitted = [image if isinstance(image, Fitted) else self.fit(image) for image in images]
        if not fitted:
            return []
        per_image = params_per_image(params, self.defaults, len(fitted))
        with self._lock:
            if self._lost is not None:
                raise EngineGone(self._lost)
            memory = self._memory
            assert memory is not None
            places, offset = [], 0
            for image in fitted:
                pixels = np.ascontiguousarray(image.pixels, dtype=np.uint8)
                height, width = pixels.shape[:2]
                if offset + pixels.nbytes > memory.size:
                    raise ValueError(f"a batch of {len(fitted)} images does not fit the shared block")
                view: np.ndarray = np.ndarray(pixels.shape, np.uint8, memory.buf, offset)
                view[...] = pixels
                places.append((offset, height, width, image.width, image.height))
                offset += pixels.nbytes
            try:
                self._connection.send(("detect", places, per_image))
                if not self._connection.poll(self.answer_timeout_s):
                    raise TimeoutError(f"no answer in {self.answer_timeout_s:.0f} s")
                kind, answer = self._connection.recv()
            except (EOFError, OSError) as exc:  # TimeoutError is an OSError
                self._lose(f"the inference engine is gone ({type(exc).__name__}: {exc})")
                raise EngineGone(self._lost) from exc
        if kind != "found":
            raise RuntimeError(str(answer))
        return [ArrayDetections(boxes, scores, labels) for boxes, scores, labels in answer]

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            if self._on_lost is not None:
                self._on_lost(reason)

    def close(self) -> None:
        self._connection.close()
        if self._memory is not None:
            self._memory.close()
            self._memory.unlink()
            self._memory = None

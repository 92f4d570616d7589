"""The loaded detector as the routes see it: predictor, weights card and batcher."""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.imaging.decode_pool import DecodePool
from app.imaging.decoding import EncodedJpeg, check_or_decode
from app.serving.batching import DynamicBatcher
from model.card import Described
from model.config import DetectParams
from model.runtime import ServingPredictor


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a batcher forms and a warm-up runs: powers of two up to the maximum."""
    return sorted({min(2**k, max_batch_size) for k in range(8)})


@dataclass
class DetectorService:
    predictor: ServingPredictor
    weights: Described
    batcher: DynamicBatcher
    decoder: DecodePool
    # Drawn answers (format=image/jpeg/png) hold a full-resolution image until it is encoded:
    # one at a time, on a thread of their own, off the event loop.
    draw_lane: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    draw_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="draw")
    )

    def shutdown(self) -> None:
        self.decoder.shutdown()
        self.draw_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictor.config.classes

    @property
    def defaults(self) -> DetectParams:
        """The service's thresholds (settings over the card's); a request overrides them one by one."""
        return self.predictor.defaults

    @property
    def dtype(self) -> str:
        return str(self.predictor.dtype).removeprefix("torch.")

    def warm_up(self, device_decode: bool = False) -> None:
        """Each batch size the batcher will form (powers of two up to its maximum) through the
        whole path, twice, so that no request pays for lazy set-up or a JIT specialisation; with
        ``device_decode`` the batch JPEG decoder too (nvJPEG sets itself up on first use)."""
        image = np.zeros((64, 96, 3), dtype=np.uint8)
        fitted = self.predictor.fit(image)
        sizes = warm_up_sizes(self.batcher.max_batch_size)
        if getattr(self.predictor, "remote", False):  # the engine warmed itself: check the path only
            sizes = [1]
        jpeg = None
        if device_decode:
            from app.imaging.device_decode import decode_batch  # torch: only with device decode

            encoded = io.BytesIO()
            Image.fromarray(image).save(encoded, "JPEG")
            jpeg = check_or_decode(encoded.getvalue(), image.size)
        for size in sizes:
            if isinstance(jpeg, EncodedJpeg):
                decode_batch([jpeg] * size, self.predictor.device)
            for _ in range(2):
                start = time.perf_counter()
                self.predictor([fitted] * size, self.predictor.defaults)
            if size == 1:  # the batcher's first estimate of seconds per image: the cautious one
                self.batcher.seconds_per_image = time.perf_counter() - start


@dataclass
class InFlight:
    """Counts /detect requests being handled, so draining can wait for them."""

    count: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

"""Dynamic batching: images from concurrent requests share one forward pass.

Requests put their images on a bounded queue; one worker task takes up to ``max_batch_size``
images, waiting at most ``timeout`` after the first for more, and runs the predictor in a single
dedicated thread so the event loop never blocks. Each image keeps its own parameters and
letterbox mapping. A full queue refuses at once (:class:`Overloaded`) instead of growing
latency without bound; an exception inside one batch fails only that batch's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from torch import Tensor

from app.imaging.decoding import DecodeError, EncodedJpeg
from app.imaging.device_decode import decode_batch
from app.metrics import Metrics
from model.config import DetectParams
from model.letterbox import Fitted
from model.postprocess import Detections
from model.predictor import Predictor

log = logging.getLogger("app.serving.batching")


class Overloaded(Exception):
    """The queue is full; the client should retry later."""


class BatchFailed(Exception):
    """The batch holding this request's images raised; the next batch is unaffected."""


@dataclass
class _Item:
    image: Tensor | Fitted | EncodedJpeg  # decoded pixels, or a JPEG to decode with its batch
    params: DetectParams
    future: asyncio.Future[Detections]


class DynamicBatcher:
    def __init__(
        self,
        predictor: Predictor,
        metrics: Metrics,
        max_batch_size: int = 16,
        timeout_s: float = 0.002,
        max_queue_images: int = 256,
    ) -> None:
        self.predictor = predictor
        self.device = predictor.device  # where JPEGs left to the batcher are decoded
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.max_queue_images = max_queue_images
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    def check_capacity(self, images: int = 1) -> None:
        """Refuse at once (before any reading or decoding) when ``images`` more would not fit."""
        if len(self._queue) + images > self.max_queue_images:
            self.metrics.rejected.inc()
            raise Overloaded(f"{len(self._queue)} images already queued (limit {self.max_queue_images})")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(BatchFailed("the service is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def submit(
        self, images: Sequence[Tensor | Fitted | EncodedJpeg], params: DetectParams
    ) -> list[Detections]:
        """Detect on ``images`` (all with ``params``); raises :class:`Overloaded`, :class:`BatchFailed`,
        or the :class:`DecodeError` of a JPEG that failed to decode."""
        self.check_capacity(len(images))
        loop = asyncio.get_running_loop()
        items = [_Item(image, params, loop.create_future()) for image in images]
        self._queue.extend(items)
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            # The request was abandoned: its images leave the queue now, not when a batch meets them.
            for item in items:
                item.future.cancel()
            self._queue = deque(item for item in self._queue if not item.future.cancelled())
            self.metrics.queue_depth.set(len(self._queue))
            raise

    async def _next_batch(self) -> list[_Item]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        if len(self._queue) < self.max_batch_size and self.timeout_s > 0:
            deadline = time.perf_counter() + self.timeout_s
            while len(self._queue) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
        batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
        self.metrics.queue_depth.set(len(self._queue))
        # A request whose client went away no longer needs its images run.
        return [item for item in batch if not item.future.cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception as exc:  # one bad batch must not stop the service
                self.metrics.batch_failures.inc()
                log.error("batch of %d images failed: %s: %s", len(batch), type(exc).__name__, exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(BatchFailed(f"{type(exc).__name__} during inference"))
                continue
            finally:
                self.metrics.inference_seconds.observe(time.perf_counter() - start)
            for item, found in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(found, DecodeError):
                    item.future.set_exception(found)
                else:
                    item.future.set_result(found)

    def _infer(self, batch: list[_Item]) -> list[Detections | DecodeError]:
        """In the inference thread: decode the batch's JPEGs (if any) on the device, then detect."""
        decoded = decode_batch([item.image for item in batch], self.device)
        pixels: list[Tensor | Fitted] = []
        params: list[DetectParams] = []
        for item, image in zip(batch, decoded, strict=True):
            if not isinstance(image, DecodeError):
                pixels.append(image)
                params.append(item.params)
        found = iter(self.predictor(pixels, params))
        return [image if isinstance(image, DecodeError) else next(found) for image in decoded]

"""Dynamic batching: images from concurrent requests share one forward pass, fairly.

Requests queue their images, each request in a line of its own; one worker task forms a batch by
taking one image from each waiting request in turn (round-robin), up to the batch size, waiting at
most ``timeout`` after the first for more, and runs the predictor in a single dedicated thread so
the event loop never blocks. So a one-image request (a camera frame) waits behind at most the
batch being run and shares the next one, never behind all the images of a 16-image request
queued before it.

The batch size is capped by a latency budget (``latency_budget_s``): the batcher keeps a running
estimate of the seconds per image of its recent batches and forms batches no longer than the
budget, so that on a CPU, where a batch of 16 takes a third of a second, batches stay short
enough for a camera's timeout, while a GPU, where 16 images take a millisecond or two, still
batches to ``max_batch_size``.

Each image keeps its own parameters and letterbox mapping. A full queue refuses at once
(:class:`Overloaded`) instead of growing latency without bound; an exception inside one batch
fails only that batch's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.imaging.decoding import DecodeError, EncodedJpeg
from app.metrics import Metrics
from model.config import DetectParams
from model.geometry import Fitted
from model.runtime import Found, ServingPredictor

log = logging.getLogger("app.serving.batching")


class Overloaded(Exception):
    """The queue is full; the client should retry later."""


class BatchFailed(Exception):
    """The batch holding this request's images raised; the next batch is unaffected."""


@dataclass
class _Item:
    image: Fitted | EncodedJpeg  # fitted pixels, or a JPEG to decode with its batch
    params: DetectParams
    future: asyncio.Future[Found]


class FairQueue:
    """Images waiting for the network, a line per request, taken round-robin across requests."""

    def __init__(self) -> None:
        self._lines: deque[deque[_Item]] = deque()
        self.images = 0

    def __len__(self) -> int:
        return self.images

    def add(self, items: list[_Item]) -> None:
        if items:
            self._lines.append(deque(items))
            self.images += len(items)

    def take(self, limit: int) -> list[_Item]:
        """Up to ``limit`` images, one from each request in turn, starting with the request that
        has waited longest; a request with images left goes to the back of the line."""
        batch: list[_Item] = []
        while self._lines and len(batch) < limit:
            line = self._lines.popleft()
            batch.append(line.popleft())
            if line:
                self._lines.append(line)
        self.images -= len(batch)
        return batch

    def drop_cancelled(self) -> None:
        lines = (deque(item for item in line if not item.future.cancelled()) for line in self._lines)
        self._lines = deque(line for line in lines if line)
        self.images = sum(len(line) for line in self._lines)

    def __iter__(self) -> Iterator[_Item]:
        for line in self._lines:
            yield from line

    def clear(self) -> None:
        self._lines.clear()
        self.images = 0


class DynamicBatcher:
    def __init__(
        self,
        predictor: ServingPredictor,
        metrics: Metrics,
        max_batch_size: int = 16,
        timeout_s: float = 0.002,
        max_queue_images: int = 256,
        latency_budget_s: float = 0.0,
    ) -> None:
        self.predictor = predictor
        self.device = predictor.device  # where JPEGs left to the batcher are decoded
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.max_queue_images = max_queue_images
        self.latency_budget_s = latency_budget_s  # 0: no budget, batches of max_batch_size
        self.seconds_per_image: float | None = None  # running estimate, from the batches run
        self._queue = FairQueue()
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

    async def submit(self, images: Sequence[Fitted | EncodedJpeg], params: DetectParams) -> list[Found]:
        """Detect on ``images`` (all with ``params``); raises :class:`Overloaded`, :class:`BatchFailed`,
        or the :class:`DecodeError` of a JPEG that failed to decode."""
        self.check_capacity(len(images))
        loop = asyncio.get_running_loop()
        items = [_Item(image, params, loop.create_future()) for image in images]
        self._queue.add(items)
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            # The request was abandoned: its images leave the queue now, not when a batch meets them.
            for item in items:
                item.future.cancel()
            self._queue.drop_cancelled()
            self.metrics.queue_depth.set(len(self._queue))
            raise

    @property
    def batch_limit(self) -> int:
        """The batch size now: ``max_batch_size``, or fewer when the latency budget says so."""
        if self.latency_budget_s <= 0 or self.seconds_per_image is None:
            return self.max_batch_size
        fits = int(self.latency_budget_s / max(self.seconds_per_image, 1e-6))
        return max(1, min(self.max_batch_size, fits))

    def _observe(self, images: int, seconds: float) -> None:
        per_image = seconds / images
        if self.seconds_per_image is None:
            self.seconds_per_image = per_image
        else:  # a running average over the last ten batches or so
            self.seconds_per_image += 0.1 * (per_image - self.seconds_per_image)

    async def _next_batch(self) -> list[_Item]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        limit = self.batch_limit
        if len(self._queue) < limit and self.timeout_s > 0:
            deadline = time.perf_counter() + self.timeout_s
            while len(self._queue) < limit:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
        batch = self._queue.take(limit)
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
                elapsed = time.perf_counter() - start
                self.metrics.inference_seconds.observe(elapsed)
            self._observe(len(batch), elapsed)
            for item, found in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(found, DecodeError):
                    item.future.set_exception(found)
                else:
                    item.future.set_result(found)

    def _infer(self, batch: list[_Item]) -> list[Found | DecodeError]:
        """In the inference thread: decode the batch's JPEGs (if any) on the device, then detect."""
        decoded: list[Any] = [item.image for item in batch]
        if any(isinstance(image, EncodedJpeg) for image in decoded):
            from app.imaging.device_decode import decode_batch  # torch: only with device decode

            decoded = decode_batch(decoded, self.device)
        pixels: list[Any] = []
        params: list[DetectParams] = []
        for item, image in zip(batch, decoded, strict=True):
            if not isinstance(image, DecodeError):
                pixels.append(image)
                params.append(item.params)
        found = iter(self.predictor(pixels, params))
        return [image if isinstance(image, DecodeError) else next(found) for image in decoded]

"""Decoding a request's images with bounded memory, CPU and time.

- Every part's framing and header are checked first (cheap), and the request's total pixels are
  capped (``DETECTOR_MAX_REQUEST_PIXELS``) before any pixel is decoded.
- Decoding runs on a pool of its own threads, never on the event loop or the default executor, so
  a slow decode cannot starve other work of threads.
- A memory budget (``DETECTOR_DECODE_BUDGET_BYTES``) bounds what the images being decoded at once
  take, across all requests: an image waits until its cost fits, the cost estimated from its
  header by :func:`~app.imaging.decoding.decode_cost` in decoded bytes (mode, alpha, 16-bit
  samples, and rows: a 1-pixel-wide image of 40 million rows costs more than its pixels say). Once decoded an
  image is fitted to the network's input and its full pixels are freed, so what a request holds
  afterwards is a few hundred kilobytes per image.
- Pillow reads each file through a deadline (``DETECTOR_DECODE_TIMEOUT_SECONDS``): a decode that
  runs past it stops and the request gets a 400 saying so.
- One request's images take at most all threads but one at a time, so that a one-image request
  (a camera frame) finds a thread free beside a 16-image one instead of waiting for its queue.
- A request whose part fails, or that is cancelled (its client went away), cancels its other
  parts: those not yet started never start, and those being read by Pillow stop at its next read.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from app.imaging.decoding import (
    DecodedImage,
    DecodeError,
    EncodedJpeg,
    Fit,
    Prepared,
    check_or_decode,
    decode_cost,
    open_checked,
    prepare,
)
from app.imaging.upload import ImagePart

T = TypeVar("T")


class MemoryBudget:
    """An async semaphore counted in bytes. Not first-come-first-served: a small image that fits
    goes ahead of a large one that does not, so ordinary photos are not held behind huge ones."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        cost = min(cost, self.capacity)  # one image over the budget runs alone
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + cost <= self.capacity)
            self.used += cost
        try:
            yield
        finally:
            async with self._changed:
                self.used -= cost
                self._changed.notify_all()


@dataclass(frozen=True)
class DecodeLimits:
    max_image_pixels: int
    max_request_pixels: int
    timeout_s: float


class DecodePool:
    def __init__(
        self,
        limits: DecodeLimits,
        budget_bytes: int,
        threads: int,
        fit: Fit,
        fit_bytes_per_pixel: int = 0,
        turbo: bool = True,
        reduce_for: int = 0,
    ) -> None:
        self.limits = limits
        self.fit = fit  # the predictor's: each runtime fits the way its evaluation measured
        self.fit_bytes_per_pixel = fit_bytes_per_pixel
        self.turbo = turbo  # JPEGs through torchvision where installed (not on the numpy runtime)
        self.reduce_for = reduce_for  # the input side: large JPEGs decode reduced (decoding.draft_size)
        self.budget = MemoryBudget(budget_bytes)
        self.per_request = max(1, threads - 1)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _header_cost(self, part: ImagePart, cancel: threading.Event) -> tuple[int, int]:
        """The part's pixels and its decoding's cost in bytes, from its checked header."""
        limits = self.limits
        image, kind = open_checked(part.data, limits.max_image_pixels, part.label, limits.timeout_s, cancel)
        width, height = image.size
        cost = decode_cost(image, kind, self.fit_bytes_per_pixel, self.turbo)
        image.close()
        return int(width * height), cost

    def _prepare(
        self, part: ImagePart, keep_full: bool, device_decode: bool, cancel: threading.Event
    ) -> Prepared | EncodedJpeg:
        limits = self.limits
        if cancel.is_set():
            raise DecodeError(499, "decoding stopped: its request was already answered or abandoned")
        if device_decode and not keep_full:
            image = check_or_decode(part.data, limits.max_image_pixels, part.label, limits.timeout_s, cancel)
            if isinstance(image, DecodedImage):
                return Prepared(
                    self.fit(image.stored, image.orientation, image.stored_size), None, image.format
                )
            return image
        return prepare(
            part.data,
            limits.max_image_pixels,
            self.fit,
            part.label,
            limits.timeout_s,
            keep_full,
            cancel,
            self.turbo,
            self.reduce_for,
        )

    async def prepare(
        self, parts: Sequence[ImagePart], keep_full: bool = False, device_decode: bool = False
    ) -> list[Prepared | EncodedJpeg]:
        """Every part decoded and fitted, in order; raises the first part's :class:`DecodeError`.

        With ``device_decode`` an RGB or greyscale JPEG is only checked and returned as an
        :class:`EncodedJpeg` for the batcher to decode on the inference device."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        costs = await _all_or_none(
            [loop.run_in_executor(self._executor, self._header_cost, part, cancel) for part in parts],
            cancel,
        )
        total = sum(pixels for pixels, _ in costs)
        if total > self.limits.max_request_pixels:
            raise DecodeError(
                413,
                f"the request's {len(parts)} images hold {total:,} pixels together, over the limit of "
                f"{self.limits.max_request_pixels:,} (DETECTOR_MAX_REQUEST_PIXELS); send fewer or smaller "
                "images per request",
            )

        lane = asyncio.Semaphore(self.per_request)

        async def one(part: ImagePart, cost: int) -> Prepared | EncodedJpeg:
            async with lane, self.budget.hold(cost):
                return await loop.run_in_executor(
                    self._executor, self._prepare, part, keep_full, device_decode, cancel
                )

        return await _all_or_none(
            [asyncio.ensure_future(one(p, cost)) for p, (_, cost) in zip(parts, costs, strict=True)], cancel
        )


async def _all_or_none(futures: list[asyncio.Future[T]], cancel: threading.Event) -> list[T]:
    """Every result in order; at the first failure (or when cancelled) the others are cancelled,
    and ``cancel`` stops the ones already decoding, before the failure is raised."""
    try:
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        failed = [future for future in futures if future in done and future.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    finally:
        if not all(future.done() for future in futures):
            cancel.set()
            for future in futures:
                future.cancel()

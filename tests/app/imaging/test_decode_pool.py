"""The decode pool's bounds: the per-image deadline and the pixel budget across requests."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.imaging.decode_pool import DecodeLimits, DecodePool, MemoryBudget
from app.imaging.decoding import DecodeError, decode_image_bytes
from app.imaging.upload import ImagePart
from model.letterbox import fit_stored
from tests.support import attacks

LIMIT = 40_000_000


def FIT(pixels, orientation):  # the torch path's fit to a 64-pixel input
    return fit_stored(pixels, orientation, 64)


@pytest.mark.slow
def test_decode_deadline_stops_the_work():
    data = attacks.photo_like(6000, 4000, "PNG")
    start = time.monotonic()
    decode_image_bytes(data, LIMIT, "big.png", timeout=30.0)
    full = time.monotonic() - start
    start = time.monotonic()
    with pytest.raises(DecodeError) as caught:
        decode_image_bytes(data, LIMIT, "big.png", timeout=full / 10)
    stopped = time.monotonic() - start
    assert caught.value.status == 400 and "DETECTOR_DECODE_TIMEOUT_SECONDS" in caught.value.detail
    assert stopped < full / 2, (stopped, full)  # it stopped, it did not run to the end


def test_pixel_budget_bounds_pixels_in_flight_and_lets_small_images_pass():
    budget = MemoryBudget(100)
    peak = 0
    order: list[str] = []

    async def job(name: str, pixels: int, seconds: float) -> None:
        nonlocal peak
        async with budget.hold(pixels):
            peak = max(peak, budget.used)
            order.append(name)
            await asyncio.sleep(seconds)

    async def main() -> None:
        await asyncio.gather(
            job("big1", 80, 0.05), job("big2", 80, 0.05), job("small", 10, 0.0), job("huge", 500, 0.0)
        )

    asyncio.run(main())
    assert peak <= 100
    assert order.index("small") < order.index("big2")  # not held behind the large image that waits
    assert set(order) == {"big1", "big2", "small", "huge"}  # over the budget: runs alone, not never


class CountingPool(DecodePool):
    """A decode pool that counts the parts it finished decoding."""

    finished = 0

    def _prepare(self, part, keep_full, device_decode, cancel):  # type: ignore[no-untyped-def]
        result = super()._prepare(part, keep_full, device_decode, cancel)
        type(self).finished += 1
        return result


def test_a_failing_part_cancels_the_parts_still_to_decode():
    slow = attacks.photo_like(2000, 1500, "PNG")
    truncated = slow[: len(slow) // 3]  # passes the header check, fails while decoding
    parts = [ImagePart(0, "bad.png", truncated)] + [ImagePart(k, f"{k}.png", slow) for k in range(1, 9)]
    pool = CountingPool(DecodeLimits(LIMIT, 10**9, 30.0), 10**9, threads=1, fit=FIT)
    CountingPool.finished = 0

    async def run() -> tuple[DecodeError, float]:
        start = time.monotonic()
        with pytest.raises(DecodeError) as caught:
            await pool.prepare(parts)
        return caught.value, time.monotonic() - start

    try:
        error, _ = asyncio.run(run())
        time.sleep(0.5)  # what was still queued would have run by now
    finally:
        pool.shutdown()
    assert error.status == 400 and "part 0" in error.detail
    assert CountingPool.finished <= 1  # of the 8 good parts at most the one being decoded finished


def test_a_cancelled_request_stops_its_decodes():
    slow = attacks.photo_like(2000, 1500, "PNG")
    parts = [ImagePart(k, f"{k}.png", slow) for k in range(8)]
    pool = CountingPool(DecodeLimits(LIMIT, 10**9, 30.0), 10**9, threads=1, fit=FIT)
    CountingPool.finished = 0

    async def run() -> None:
        task = asyncio.ensure_future(pool.prepare(parts))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        time.sleep(1.0)
    finally:
        pool.shutdown()
    assert CountingPool.finished <= 1

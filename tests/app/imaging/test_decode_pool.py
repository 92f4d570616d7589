"""The decode pool's bounds: the per-image deadline and the pixel budget across requests."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.imaging.decode_pool import PixelBudget
from app.imaging.decoding import DecodeError, decode_image_bytes
from tests.support import attacks

LIMIT = 40_000_000


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
    budget = PixelBudget(100)
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

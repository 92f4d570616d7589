"""The dynamic batcher: answers equal the predictor's own, requests coalesce, failures stay contained."""

from __future__ import annotations

import asyncio

import pytest
import torch

from app.metrics import Metrics
from app.serving.batching import BatchFailed, DynamicBatcher, Overloaded
from model.config import DetectParams
from model.predictor import Predictor
from tests.support.weights import make_weights


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = make_weights(tmp_path_factory.mktemp("w"), objectness_bias=6.0)
    return Predictor.from_weights(folder, "cpu", backend="eager")[0]


def images(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = [(48, 64), (80, 40), (64, 64), (30, 90)]
    return [
        torch.randint(0, 256, (3, *sizes[k % len(sizes)]), dtype=torch.uint8, generator=generator)
        for k in range(count)
    ]


class Counting:
    """A predictor stand-in that records the batch sizes it is called with."""

    def __init__(self, inner: Predictor, fail: bool = False) -> None:
        self.inner, self.fail, self.calls = inner, fail, []
        self.device = inner.device

    def __call__(self, pixels, params):
        self.calls.append(len(pixels))
        if self.fail:
            raise RuntimeError("a broken batch")
        return self.inner(pixels, params)


def test_concurrent_requests_get_their_solo_answers(predictor: Predictor):
    requests = [
        (images(3, seed=1), DetectParams(score_threshold=0.3)),
        (images(1, seed=2), DetectParams(score_threshold=0.1, iou_threshold=0.9, max_detections=5)),
        (images(2, seed=3), DetectParams(class_ids=frozenset({14}))),
    ]

    async def main():
        batcher = DynamicBatcher(predictor, Metrics(), max_batch_size=4, timeout_s=0.01)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(imgs, params) for imgs, params in requests))
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    for (imgs, params), answer in zip(requests, answers, strict=True):
        for image, found in zip(imgs, answer, strict=True):
            (alone,) = predictor([image], params)
            torch.testing.assert_close(found.boxes_xyxy, alone.boxes_xyxy, atol=1e-3, rtol=0)
            torch.testing.assert_close(found.scores, alone.scores, atol=1e-4, rtol=0)
            assert found.labels.tolist() == alone.labels.tolist()


def test_requests_waiting_together_share_batches_up_to_the_limit(predictor: Predictor):
    spy = Counting(predictor)

    async def main():
        batcher = DynamicBatcher(spy, Metrics(), max_batch_size=4, timeout_s=0.05)  # type: ignore[arg-type]
        batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(images(1, seed=k), DetectParams()) for k in range(6)))
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert sum(spy.calls) == 6 and max(spy.calls) == 4 and len(spy.calls) == 2


def test_a_full_queue_is_refused_before_anything_runs(predictor: Predictor):
    metrics = Metrics()
    batcher = DynamicBatcher(predictor, metrics, max_queue_images=2)
    with pytest.raises(Overloaded):
        batcher.check_capacity(3)
    assert metrics.rejected._value.get() == 1


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs(predictor: Predictor):
    spy = Counting(predictor, fail=True)

    async def main():
        batcher = DynamicBatcher(spy, Metrics(), max_batch_size=4, timeout_s=0.0)  # type: ignore[arg-type]
        batcher.start()
        try:
            with pytest.raises(BatchFailed):
                await batcher.submit(images(2), DetectParams())
            spy.fail = False
            return await batcher.submit(images(2), DetectParams())
        finally:
            await batcher.stop()

    assert len(asyncio.run(main())) == 2


def test_an_abandoned_request_leaves_the_queue_at_once(predictor: Predictor):
    async def main() -> tuple[int, int, list[int]]:
        slow = Counting(predictor)
        batcher = DynamicBatcher(slow, Metrics(), max_batch_size=2, timeout_s=0.0, max_queue_images=8)  # type: ignore[arg-type]
        # not started: everything stays queued, as behind a long batch
        abandoned = asyncio.ensure_future(batcher.submit(images(6), DetectParams()))
        await asyncio.sleep(0)
        queued = len(batcher._queue)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        left = len(batcher._queue)
        batcher.check_capacity(8)  # the whole queue is free again
        batcher.start()
        try:
            await batcher.submit(images(1), DetectParams())
        finally:
            await batcher.stop()
        return queued, left, slow.calls

    queued, left, calls = asyncio.run(main())
    assert (queued, left) == (6, 0)
    assert calls == [1]  # none of the abandoned images ran


def test_the_queue_takes_one_image_per_request_in_turn():
    from app.serving.batching import FairQueue, _Item

    loop = asyncio.new_event_loop()
    try:

        def items(name: str, count: int) -> list[_Item]:
            return [_Item(name, DetectParams(), loop.create_future()) for _ in range(count)]  # type: ignore[arg-type]

        queue = FairQueue()
        queue.add(items("bulk", 6))
        queue.add(items("camera", 1))
        queue.add(items("other", 2))
        assert [item.image for item in queue.take(4)] == ["bulk", "camera", "other", "bulk"]
        assert [item.image for item in queue.take(4)] == ["other", "bulk", "bulk", "bulk"]
        assert [item.image for item in queue.take(4)] == ["bulk"] and len(queue) == 0
    finally:
        loop.close()


def test_a_camera_frame_shares_the_next_batch_instead_of_waiting_behind_a_bulk_request(predictor: Predictor):
    class Recording(Counting):
        def __call__(self, pixels, params):
            self.calls.append([tuple(p.shape) for p in pixels])
            return self.inner(pixels, params)

    async def main() -> list[list[tuple[int, ...]]]:
        spy = Recording(predictor)
        batcher = DynamicBatcher(spy, Metrics(), max_batch_size=4, timeout_s=0.0)  # type: ignore[arg-type]
        bulk = asyncio.ensure_future(batcher.submit(images(16), DetectParams()))
        await asyncio.sleep(0)
        camera_frame = torch.zeros(3, 33, 77, dtype=torch.uint8)
        camera = asyncio.ensure_future(batcher.submit([camera_frame], DetectParams()))
        await asyncio.sleep(0)
        batcher.start()  # both queued before the first batch, as behind a long-running one
        try:
            await asyncio.gather(bulk, camera)
        finally:
            await batcher.stop()
        return spy.calls

    calls = asyncio.run(main())
    assert (3, 33, 77) in calls[0]  # the first batch, not the fifth
    assert sum(len(batch) for batch in calls) == 17 and max(len(batch) for batch in calls) == 4


def test_the_latency_budget_caps_the_batch_size(predictor: Predictor):
    batcher = DynamicBatcher(predictor, Metrics(), max_batch_size=16, latency_budget_s=0.040)
    assert batcher.batch_limit == 16  # nothing measured yet
    batcher.seconds_per_image = 0.018  # a CPU: 18 ms per image
    assert batcher.batch_limit == 2
    batcher.seconds_per_image = 0.0001  # a GPU
    assert batcher.batch_limit == 16
    batcher.seconds_per_image = 0.5  # slower than the budget: one at a time, never none
    assert batcher.batch_limit == 1
    batcher._observe(4, 0.004)
    assert batcher.seconds_per_image == pytest.approx(0.5 + 0.1 * (0.001 - 0.5))

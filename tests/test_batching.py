from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.batching import DynamicBatcher, QueueFull


class RecordingModel:
    """Returns each image's mean and its row index; records the batch sizes it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batch_sizes: list[int] = []
        self.delay = delay

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.delay)
        self.batch_sizes.append(len(batch))
        return np.stack([batch.reshape(len(batch), -1).mean(axis=1), np.arange(len(batch))], axis=1)


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


async def test_concurrent_requests_share_model_calls_and_get_their_own_answers(executor) -> None:
    model = RecordingModel(delay=0.02)
    batcher = DynamicBatcher(model, executor=executor, max_batch_size=8, max_queue=100)
    batcher.start()
    images = [np.full((4, 4, 1), i, np.float32) for i in range(20)]
    results = await asyncio.gather(*(batcher.submit(image) for image in images))
    await batcher.stop()
    assert [float(r[0]) for r in results] == [float(i) for i in range(20)]
    assert sum(model.batch_sizes) == 20
    assert max(model.batch_sizes) == 8  # batches formed and were capped
    assert len(model.batch_sizes) < 20


async def test_a_lone_request_is_not_held_back(executor) -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, executor=executor, max_batch_size=32, timeout_s=0.0)
    batcher.start()
    await asyncio.wait_for(batcher.submit(np.zeros((2, 2, 1), np.float32)), timeout=1)
    await batcher.stop()
    assert model.batch_sizes == [1]


async def test_timeout_waits_for_a_fuller_batch(executor) -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, executor=executor, max_batch_size=4, timeout_s=0.2)
    batcher.start()

    async def later(delay: float) -> np.ndarray:
        await asyncio.sleep(delay)
        return await batcher.submit(np.zeros((2, 2, 1), np.float32))

    await asyncio.gather(later(0), later(0.02), later(0.04))
    await batcher.stop()
    assert model.batch_sizes == [3]


async def test_full_queue_refuses_at_once(executor) -> None:
    model = RecordingModel(delay=0.2)
    batcher = DynamicBatcher(model, executor=executor, max_batch_size=1, max_queue=2)
    batcher.start()
    image = np.zeros((2, 2, 1), np.float32)
    first = asyncio.ensure_future(batcher.submit(image))
    await asyncio.sleep(0.05)  # the first is now running; two more fill the queue
    queued = [asyncio.ensure_future(batcher.submit(image)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await asyncio.wait_for(batcher.submit(image), timeout=0.05)
    await asyncio.gather(first, *queued)
    await batcher.stop()


async def test_a_model_failure_reaches_every_waiting_request(executor) -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    batcher = DynamicBatcher(broken, executor=executor, max_batch_size=4)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(np.zeros((2, 2, 1), np.float32)) for _ in range(3)),
                                   return_exceptions=True)
    await batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)

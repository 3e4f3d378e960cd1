from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.runtime.batching import Admission, DynamicBatcher, QueueFull


async def answer(admission: Admission, image: np.ndarray) -> np.ndarray:
    """One admitted, preprocessed image -> its output row."""
    (row,) = await admission.submit_many([image])
    return row


async def submit(batcher: DynamicBatcher, image: np.ndarray) -> np.ndarray:
    """Admit and queue one preprocessed image, as a route does."""
    with batcher.admit() as admission:
        return await answer(admission, image)


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


async def test_concurrent_requests_share_model_calls_and_get_their_own_answers() -> None:
    model = RecordingModel(delay=0.02)
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue=100)
    batcher.start()
    images = [np.full((4, 4, 1), i, np.float32) for i in range(20)]
    results = await asyncio.gather(*(submit(batcher, image) for image in images))
    await batcher.stop()
    assert [float(r[0]) for r in results] == [float(i) for i in range(20)]
    assert sum(model.batch_sizes) == 20
    assert max(model.batch_sizes) == 8  # batches formed and were capped
    assert len(model.batch_sizes) < 20


async def test_a_lone_request_is_not_held_back() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=32, timeout_s=0.0)
    batcher.start()
    await asyncio.wait_for(submit(batcher, np.zeros((2, 2, 1), np.float32)), timeout=1)
    await batcher.stop()
    assert model.batch_sizes == [1]


async def test_timeout_waits_for_a_fuller_batch() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=4, timeout_s=0.2)
    batcher.start()

    async def later(delay: float) -> np.ndarray:
        await asyncio.sleep(delay)
        return await submit(batcher, np.zeros((2, 2, 1), np.float32))

    await asyncio.gather(later(0), later(0.02), later(0.04))
    await batcher.stop()
    assert model.batch_sizes == [3]


async def test_full_queue_refuses_at_once() -> None:
    model = RecordingModel(delay=0.2)
    batcher = DynamicBatcher(model, max_batch_size=1, max_queue=2)
    batcher.start()
    image = np.zeros((2, 2, 1), np.float32)
    first = asyncio.ensure_future(submit(batcher, image))
    await asyncio.sleep(0.05)  # the first is now running; two more fill the queue
    queued = [asyncio.ensure_future(submit(batcher, image)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await asyncio.wait_for(submit(batcher, image), timeout=0.05)
    await asyncio.gather(first, *queued)
    await batcher.stop()


async def test_a_model_failure_reaches_every_waiting_request() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    batcher = DynamicBatcher(broken, max_batch_size=4)
    batcher.start()
    results = await asyncio.gather(
        *(submit(batcher, np.zeros((2, 2, 1), np.float32)) for _ in range(3)), return_exceptions=True
    )
    await batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_batches_keep_running_while_the_event_loop_is_busy() -> None:
    # Under a flood, one turn of the event loop can take long; the model must not wait for it.
    model = RecordingModel(delay=0.01)
    batcher = DynamicBatcher(model, max_batch_size=2)
    batcher.start()
    waiting = [asyncio.ensure_future(submit(batcher, np.full((2, 2, 1), i, np.float32))) for i in range(8)]
    await asyncio.sleep(0)  # all eight are queued
    time.sleep(0.3)  # noqa: ASYNC251 -- on purpose: the loop is stuck in one long turn
    assert sum(model.batch_sizes) == 8  # ... and every batch ran meanwhile
    results = await asyncio.gather(*waiting)
    await batcher.stop()
    assert [float(r[0]) for r in results] == [float(i) for i in range(8)]


async def test_a_cancelled_request_is_skipped_and_the_others_answered() -> None:
    model = RecordingModel(delay=0.05)
    batcher = DynamicBatcher(model, max_batch_size=1)
    batcher.start()
    first = asyncio.ensure_future(submit(batcher, np.zeros((2, 2, 1), np.float32)))
    await asyncio.sleep(0.01)  # the first is running
    gone = asyncio.ensure_future(submit(batcher, np.ones((2, 2, 1), np.float32)))
    last = asyncio.ensure_future(submit(batcher, np.full((2, 2, 1), 2, np.float32)))
    await asyncio.sleep(0)
    gone.cancel()  # its client went away while it waited
    assert float((await last)[0]) == 2.0 and float((await first)[0]) == 0.0
    await batcher.stop()
    assert model.batch_sizes == [1, 1]


async def test_stop_answers_what_is_queued_and_refuses_what_comes_after() -> None:
    model = RecordingModel(delay=0.1)
    batcher = DynamicBatcher(model, max_batch_size=1)
    batcher.start()
    running = asyncio.ensure_future(submit(batcher, np.zeros((2, 2, 1), np.float32)))
    await asyncio.sleep(0.02)
    queued = asyncio.ensure_future(submit(batcher, np.ones((2, 2, 1), np.float32)))
    await asyncio.sleep(0)
    await batcher.stop()
    assert float((await running)[0]) == 0.0 and float((await queued)[0]) == 1.0
    with pytest.raises(QueueFull, match="shutting down"):
        await asyncio.wait_for(submit(batcher, np.zeros((2, 2, 1), np.float32)), timeout=1)


async def test_admitted_requests_count_towards_the_bound_until_queued_or_dropped() -> None:
    batcher = DynamicBatcher(RecordingModel(), max_batch_size=4, max_queue=2)
    batcher.start()
    first, second = batcher.admit(), batcher.admit()  # both still being decoded
    with pytest.raises(QueueFull, match="2 images already waiting"):
        batcher.admit()
    second.close()  # its image turned out corrupt: the slot is free again
    third = batcher.admit()
    results = await asyncio.gather(
        answer(first, np.zeros((2, 2, 1), np.float32)), answer(third, np.ones((2, 2, 1), np.float32))
    )
    assert [float(r[0]) for r in results] == [0.0, 1.0]
    batcher.admit().close()  # answered requests no longer count
    await batcher.stop()


async def test_a_batch_waits_for_admitted_requests_still_on_their_way() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=4, gather_s=0.5)
    batcher.start()
    early, late = batcher.admit(), batcher.admit()

    async def decoded_later() -> np.ndarray:
        await asyncio.sleep(0.05)
        return await answer(late, np.ones((2, 2, 1), np.float32))

    await asyncio.gather(answer(early, np.zeros((2, 2, 1), np.float32)), decoded_later())
    await batcher.stop()
    assert model.batch_sizes == [2]


async def test_a_request_admitted_before_the_stop_and_decoded_after_it_is_refused() -> None:
    batcher = DynamicBatcher(RecordingModel(), max_batch_size=4)
    batcher.start()
    with batcher.admit() as admission:
        await batcher.stop()
        with pytest.raises(QueueFull, match="shutting down"):
            await asyncio.wait_for(answer(admission, np.zeros((2, 2, 1), np.float32)), timeout=1)


async def test_a_batch_stops_waiting_once_nothing_is_on_its_way() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=4, gather_s=5.0)
    batcher.start()
    early, dropped = batcher.admit(), batcher.admit()

    async def fails_to_decode() -> None:
        await asyncio.sleep(0.05)
        dropped.close()

    started = time.monotonic()
    await asyncio.gather(answer(early, np.zeros((2, 2, 1), np.float32)), fails_to_decode())
    await batcher.stop()
    assert model.batch_sizes == [1]
    assert time.monotonic() - started < 2.5  # not the whole 5 s gather time


async def test_a_requests_images_share_a_batch_however_slowly_they_are_queued(monkeypatch) -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch_size=2, timeout_s=0.0)
    batcher.start()
    queue_one = batcher._enqueue

    def slow_enqueue(pending) -> None:  # the batching thread sees each image well before the next
        queue_one(pending)
        time.sleep(0.02)

    monkeypatch.setattr(batcher, "_enqueue", slow_enqueue)
    images = [np.full((2, 2, 1), i, np.float32) for i in range(5)]
    with batcher.admit(5) as admission:
        rows = await asyncio.wait_for(admission.submit_many(images), timeout=5)
    await batcher.stop()
    assert [float(row[0]) for row in rows] == [0, 1, 2, 3, 4]
    assert model.batch_sizes == [2, 2, 1]  # together where they fit, never past the batch size

"""Dynamic batching: concurrent requests for one model are answered by one model call.

Like TensorFlow Serving's and Triton's batchers. One worker task per model takes the first waiting
request, adds whatever else is already queued (optionally waiting up to a timeout for more), and
runs the batch in a thread. While a batch runs, new requests queue up and form the next batch, so
batches grow with load while a lone request waits for nothing. The queue is bounded: when it is
full, `submit` fails at once with `QueueFull` rather than making the client wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


class QueueFull(Exception):
    """The batcher's queue is at its bound."""


@dataclass
class _Pending:
    image: np.ndarray
    result: asyncio.Future[np.ndarray]


class DynamicBatcher:
    def __init__(
        self, predict: Predict, *, executor: Executor | None, max_batch_size: int = 32,
        timeout_s: float = 0.0, max_queue: int = 256,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.images_run = 0

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.result.done():
                pending.result.set_exception(QueueFull("the service is shutting down"))

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """One preprocessed image (H x W x C) -> its output row."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} requests already waiting")
        pending = _Pending(image, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.result.cancelled()]
            if not live:
                continue
            inputs = np.stack([p.image for p in live])
            try:
                outputs = await loop.run_in_executor(self._executor, self._predict, inputs)
            except Exception as error:  # the model failed: every waiting request learns why
                for pending in live:
                    if not pending.result.done():
                        pending.result.set_exception(error)
                continue
            self.batches_run += 1
            self.images_run += len(live)
            for pending, row in zip(live, outputs, strict=True):
                if not pending.result.done():
                    pending.result.set_result(row)

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

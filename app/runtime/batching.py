"""Dynamic batching: concurrent requests for one model are answered by one model call.

Like TensorFlow Serving's and Triton's batchers. Each model has one batching thread: it waits for
the first request, adds whatever else is already queued (optionally waiting up to a timeout for
more), runs the model on the batch and hands each row back to its request's event loop. While a
batch runs, new requests queue up and form the next batch, so batches grow with load while a lone
request waits for nothing.

The thread, not an asyncio task, forms and dispatches the batches: under a flood of requests one
turn of the event loop can take hundreds of milliseconds (each request's parsing runs in it), and a
task that needs several turns per batch left the model idle (measured: 8-image batches every
~300 ms while the model itself took ~10 ms). The loop is now needed only to enqueue a request and
to resume it when its answer is set.

The queue is bounded: when it is full, `submit` fails at once with `QueueFull` rather than making
the client wait.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

# N stacked images -> N answers, one per image in order (an array's rows or a list).
Predict = Callable[[np.ndarray], Sequence[Any]]
# After each model call: how long each image waited in the queue, and how long the call took (seconds).
BatchObserver = Callable[[Sequence[float], float], None]


class QueueFull(Exception):
    """The batcher's queue is at its bound."""


@dataclass
class _Pending:
    image: np.ndarray
    result: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    queued_at: float = 0.0  # time.monotonic() when queued
    following: int = 0  # images of the same request queued right after this one


def _deliver(batch: list[_Pending], values: Sequence[Any]) -> None:
    """Hand each answer to its request's event loop: one wake-up per loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}
    for pending, value in zip(batch, values, strict=True):
        by_loop.setdefault(pending.loop, []).append((pending.result, value))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, answers)
        except RuntimeError:  # that loop has closed: nobody is waiting any more
            pass


def _settle(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, value in answers:
        if future.done():  # the client went away and the request was cancelled
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


_STOP = object()
GATHER_SLICE_S = 0.0005


class Admission:
    """A request (of one or several images) let in by `DynamicBatcher.admit`: counted as on its way
    until its images are queued or it is dropped.

    The batching thread waits (up to `gather_s`) for admitted requests that are still being decoded,
    so that under load a batch is not closed a moment before they arrive, while a lone request,
    with nothing else on its way, is run at once.
    """

    def __init__(self, batcher: DynamicBatcher, count: int = 1) -> None:
        self._batcher = batcher
        self._count = count
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._batcher._on_the_way -= self._count

    async def submit_many(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Preprocessed images -> their answers in order; queued together, so they share a batch."""
        loop = asyncio.get_running_loop()
        pendings = [
            _Pending(image, loop.create_future(), loop, following=len(images) - 1 - index)
            for index, image in enumerate(images)
        ]
        # Leave "on its way" before queueing: were the thread to see the request as both, it would
        # wait gather_s for a request that is already there (measured: +1 ms at concurrency 1).
        self.close()
        for pending in pendings:
            self._batcher._enqueue(pending)
        return list(await asyncio.gather(*(pending.result for pending in pendings)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DynamicBatcher:
    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int = 32,
        timeout_s: float = 0.0,
        gather_s: float = 0.005,
        max_queue: int = 256,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self._observer = observer
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.gather_s = gather_s
        self.max_queue = max_queue
        self._on_the_way = 0  # admitted, not yet queued; changed on the event loop, read by the thread
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._stopping = False
        self.batches_run = 0
        self.images_run = 0

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    async def stop(self) -> None:
        """Answer every request already queued, then stop; later requests are refused."""
        self._stopping = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        left = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Pending):
                left.append(item)
        _deliver(left, [QueueFull("the service is shutting down") for _ in left])

    @property
    def depth(self) -> int:
        """Images admitted and not yet taken into a batch."""
        return self._queue.qsize() + self._on_the_way

    def admit(self, count: int = 1) -> Admission:
        """Let a request of `count` images in, or raise `QueueFull` at once, before any work is spent on it."""
        if self._stopping:
            raise QueueFull("the service is shutting down")
        waiting = self._queue.qsize() + self._on_the_way
        if waiting + count > self.max_queue:
            raise QueueFull(f"{waiting} images already waiting")
        self._on_the_way += count
        return Admission(self, count)

    def _enqueue(self, pending: _Pending) -> None:
        if self._stopping and not self._thread.is_alive():  # admitted before the stop, decoded after it
            raise QueueFull("the service is shutting down")
        pending.queued_at = time.monotonic()
        self._queue.put(pending)

    def _run(self) -> None:
        while True:
            batch, stopping = self._collect()
            live = [p for p in batch if not p.result.cancelled()]
            if live:
                self._answer(live)
            if stopping:
                return

    def _collect(self) -> tuple[list[_Pending], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[_Pending] = [first]  # type: ignore[list-item]
        started = time.monotonic()
        while len(batch) < self.max_batch_size:
            if batch[-1].following:
                # The rest of its request is being queued this moment (one turn of the event loop, nothing
                # else between): take it whatever the clock says, so a request's images share a batch where
                # they fit (a timed wait lost the race under load and split a request of two images).
                item = self._queue.get()
                if item is _STOP:
                    return batch, True
                batch.append(item)  # type: ignore[arg-type]
                continue
            elapsed = time.monotonic() - started
            timeout_left = self.timeout_s - elapsed
            gather_left = self.gather_s - elapsed if self._on_the_way > 0 else 0.0
            if timeout_left >= gather_left:
                wait = timeout_left  # a plain timeout (or none): one wait
            else:  # requests are on their way: wait in short slices, to stop once none is left
                wait = min(gather_left, GATHER_SLICE_S)
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                if wait > 0:
                    continue  # look again at the clock and at what is on its way
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _answer(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            outputs = self._predict(np.stack([p.image for p in batch]))
        except Exception as error:  # the model failed: every waiting request learns why
            _deliver(batch, [error] * len(batch))
            return
        if self._observer is not None:
            self._observer([started - p.queued_at for p in batch], time.monotonic() - started)
        self.batches_run += 1
        self.images_run += len(batch)
        _deliver(batch, list(outputs))

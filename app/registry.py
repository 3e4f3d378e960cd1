"""The models the service holds: found, loaded and warmed at startup; looked up per request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import numpy as np

from app.batching import DynamicBatcher, QueueFull
from app.errors import ModelUnavailable, Overloaded, UnknownDisease
from app.model_card import ModelCard
from app.model_store import disease_names, latest_version, version_dir
from app.savedmodel import ImageOutputs, LoadedModel, ModelLoadError, load_model
from app.settings import Settings

log = logging.getLogger("medscan.models")

# Preprocessed float32 images (H x W x C each) -> the model's outputs for each, in one batch where possible.
Predictor = Callable[[Sequence[np.ndarray]], Awaitable[list[ImageOutputs]]]


class ModelStatus(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ServedModel:
    disease: str
    version: int | None
    status: ModelStatus = ModelStatus.LOADING
    error: str | None = None
    model: LoadedModel | None = None
    batcher: DynamicBatcher | None = None

    @property
    def card(self) -> ModelCard | None:
        return self.model.card if self.model else None

    @property
    def loaded(self) -> LoadedModel:
        """The model of a READY entry (what `ModelRegistry.get` returns)."""
        if self.model is None:
            raise ModelUnavailable(f"the {self.disease} model is {self.status.value}: {self.error or 'not ready yet'}")
        return self.model


@dataclass
class ModelRegistry:
    settings: Settings
    models: dict[str, ServedModel] = field(default_factory=dict)
    loaded: bool = False
    # Runs unbatched model calls (MEDSCAN_BATCHING=false); batched calls run in each
    # model's batching thread. TensorFlow already spreads each call over the cores.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="model"))

    @property
    def ready(self) -> bool:
        return self.loaded and all(m.status is not ModelStatus.LOADING for m in self.models.values())

    async def load_all(self) -> None:
        """Find `<models>/<disease>/<latest version>/` and load each; a failure is logged and kept."""
        for disease in disease_names(self.settings.models_dir):
            version = latest_version(self.settings.models_dir, disease)
            self.models[disease] = ServedModel(disease=disease, version=version)
        for served in self.models.values():
            await self._load(served)
        self.loaded = True

    async def _load(self, served: ServedModel) -> None:
        if served.version is None:
            served.status, served.error = ModelStatus.FAILED, "no integer version folder"
            log.error("%s: %s", served.disease, served.error)
            return
        path = version_dir(self.settings.models_dir, served.disease, served.version)
        try:
            model = await asyncio.to_thread(load_model, path)
            await asyncio.to_thread(self._warm_up, model)
        except ModelLoadError as error:
            served.status, served.error = ModelStatus.FAILED, str(error)
            log.error("%s version %s failed to load: %s", served.disease, served.version, error)
            return
        except Exception as error:  # whatever else breaks one model must not stop the others
            served.status, served.error = ModelStatus.FAILED, f"{type(error).__name__}: {error}"
            log.exception("%s version %s failed to load", served.disease, served.version)
            return
        if model.card.disease != served.disease:
            served.status = ModelStatus.FAILED
            served.error = f"{path}: card says disease {model.card.disease!r}"
            log.error(served.error)
            return
        served.model = model
        if self.settings.batching:
            served.batcher = DynamicBatcher(
                model.analyse, max_batch_size=self.settings.max_batch_size, name=served.disease,
                timeout_s=self.settings.batch_timeout_ms / 1000, gather_s=self.settings.batch_gather_ms / 1000,
                max_queue=self.settings.max_queue,
            )
            served.batcher.start()
        served.status = ModelStatus.READY
        log.info("%s version %s ready (input %s)", served.disease, served.version, model.card.input.spec().shape)

    def _warm_up(self, model: LoadedModel) -> None:
        # load_model's probe already made the first call (batch 1), which runs the graph's one-off
        # set-up; later calls at new batch sizes showed no stall (measured with TF 2.21 on CPU), so
        # only the largest batch, whose buffers are the biggest, is left to warm.
        if self.settings.batching and self.settings.max_batch_size > 1:
            shape = model.card.input.spec().shape
            model.analyse(np.zeros((self.settings.max_batch_size, *shape), dtype=np.float32))

    def get(self, disease: str) -> ServedModel:
        served = self.models.get(disease)
        if served is None:
            raise UnknownDisease(disease, sorted(self.models))
        if served.status is not ModelStatus.READY:
            raise ModelUnavailable(f"the {disease} model is {served.status.value}: {served.error or 'not ready yet'}")
        return served

    @contextmanager
    def admitted(self, served: ServedModel, count: int = 1) -> Iterator[Predictor]:
        """Let a request of `count` images in, or raise `Overloaded` at once when its model's queue
        is full, and give it the call that answers it. Call this before decoding: the admitted images
        count towards the queue from then on, and the batcher waits briefly for them."""
        assert served.model is not None
        if served.batcher is None:
            yield partial(self._predict_unbatched, served.model)
            return
        try:
            admission = served.batcher.admit(count)
        except QueueFull as error:
            raise Overloaded(served.disease) from error
        with admission:
            yield admission.submit_many

    async def _predict_unbatched(self, model: LoadedModel, images: Sequence[np.ndarray]) -> list[ImageOutputs]:
        if not images:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, model.analyse, np.stack(images))

    async def run_blocking(self, function: Callable[..., object], *args: object) -> object:
        """Run other model work (Grad-CAM) on the model thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, function, *args)

    async def close(self) -> None:
        for served in self.models.values():
            if served.batcher is not None:
                await served.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

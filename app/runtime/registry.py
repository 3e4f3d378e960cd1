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
from pathlib import Path
from typing import ClassVar

import numpy as np

from app import request_context
from app.contract import memory
from app.contract.model_card import ModelCard, read_card
from app.contract.model_store import METADATA_FILE, disease_names, version_dir, versions
from app.contract.savedmodel import ImageOutputs, LoadedModel, ModelLoadError, load_model
from app.runtime.batching import DynamicBatcher, QueueFull
from app.runtime.errors import ModelUnavailable, Overloaded, TooManyImages, UnknownDisease, UnknownVersion
from app.runtime.version_policy import chosen_versions
from app.settings import Settings

log = logging.getLogger("medscan.models")

# Preprocessed float32 images (H x W x C each) -> the model's outputs for each, in one batch where possible.
Predictor = Callable[[Sequence[np.ndarray]], Awaitable[list[ImageOutputs]]]


class ModelStatus(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Loading:
    """Found on disk; being loaded and warmed in the background."""

    status: ClassVar[ModelStatus] = ModelStatus.LOADING


@dataclass(frozen=True)
class Ready:
    """Loaded and warmed: answers requests."""

    model: LoadedModel
    batcher: DynamicBatcher | None  # None with MEDSCAN_BATCHING=false: each call goes to the model thread
    status: ClassVar[ModelStatus] = ModelStatus.READY


@dataclass(frozen=True)
class Failed:
    """Would not load; reported, and retried when its files change."""

    error: str
    status: ClassVar[ModelStatus] = ModelStatus.FAILED


LoadState = Loading | Ready | Failed


@dataclass
class ServedModel:
    """One version of one disease's model: where it is on its way to answering (`state`), and its files."""

    disease: str
    version: int | None
    state: LoadState = field(default_factory=Loading)
    fingerprint: tuple[int, ...] = ()  # a failed version is retried, a served one reloaded, when its files change
    card_stamp: tuple[int, int] = (0, 0)  # metadata.json's size and mtime when loaded
    in_flight: int = 0  # requests admitted and not finished; a retired version waits for 0

    @property
    def status(self) -> ModelStatus:
        return self.state.status

    @property
    def error(self) -> str | None:
        return self.state.error if isinstance(self.state, Failed) else None

    @property
    def model(self) -> LoadedModel | None:
        return self.state.model if isinstance(self.state, Ready) else None

    @property
    def batcher(self) -> DynamicBatcher | None:
        return self.state.batcher if isinstance(self.state, Ready) else None

    @property
    def card(self) -> ModelCard | None:
        return self.model.card if self.model else None

    @property
    def fingerprint_without_card(self) -> tuple[int, ...]:
        return _without_card(self.fingerprint)

    @property
    def loaded(self) -> LoadedModel:
        """The model of a READY entry (what `ModelRegistry.get` returns)."""
        if not isinstance(self.state, Ready):
            raise ModelUnavailable(f"the {self.disease} model is {self.status.value}: {self.error or 'not ready yet'}")
        return self.state.model


NO_VERSION = -1  # the key of a disease folder's entry that holds no version folder


def _fingerprint(path: Path) -> tuple[int, ...]:
    """Size and modification time of every file of a version, by path: a copy still being written, in any
    order, or a file rewritten in place (a card by a `record-*` command, data appended) changes it."""
    stamps: list[int] = []
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    except OSError:
        return ()
    for file in files:
        try:
            stat = file.stat()
        except OSError:  # removed between the listing and now: the next poll sees the folder settled
            continue
        stamps += [hash(str(file.relative_to(path))), stat.st_size, stat.st_mtime_ns]
    return tuple(stamps)


def _without_card(fingerprint: tuple[int, ...]) -> tuple[int, ...]:
    card = hash(METADATA_FILE)
    triples = [fingerprint[i : i + 3] for i in range(0, len(fingerprint), 3)]
    return tuple(value for triple in triples if triple[0] != card for value in triple)


def _card_stamp(path: Path) -> tuple[int, int]:
    try:
        stat = (path / METADATA_FILE).stat()
    except OSError:
        return (0, 0)
    return (stat.st_size, stat.st_mtime_ns)


@dataclass
class ModelRegistry:
    """Every version the policy wants, per disease; the newest ready one answers unpinned requests.

    `sync()` (at start-up, every `model_poll_interval_s`, and on POST /admin/reload) compares the
    folder with what is loaded: new versions are loaded and warmed in the background while the old
    ones keep answering; a version that fails to load is reported and the old one keeps serving; a
    version that leaves the policy or the disk stops taking requests at once and is closed after
    its in-flight requests finish."""

    settings: Settings
    loaded: bool = False
    scan_error: str | None = None  # the models folder could not be read at the last sync
    _versions: dict[str, dict[int, ServedModel]] = field(default_factory=dict)
    _sync_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _retiring: set[asyncio.Task] = field(default_factory=set)
    # Told of every model call (disease, version, each image's queue wait, model seconds): the metrics.
    batch_observer: Callable[[str, int | None, Sequence[float], float], None] | None = None
    # Runs unbatched model calls (MEDSCAN_BATCHING=false); batched calls run in each
    # model's batching thread. TensorFlow already spreads each call over the cores.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="model"))

    @property
    def ready(self) -> bool:
        return self.loaded

    @property
    def models(self) -> dict[str, ServedModel]:
        """Per disease, the version that answers unpinned requests (or, if none can, the newest one tried)."""
        return {disease: self._default(versions) for disease, versions in sorted(self._versions.items()) if versions}

    def versions(self, disease: str) -> dict[int, ServedModel]:
        return dict(sorted(self._versions.get(disease, {}).items()))

    @staticmethod
    def _default(versions: dict[int, ServedModel]) -> ServedModel:
        ready = [v for v in versions.values() if v.status is ModelStatus.READY]
        return max(ready or versions.values(), key=lambda served: served.version or 0)

    async def load_all(self) -> None:
        await self.sync()
        self.loaded = True

    async def sync(self) -> None:
        """Bring what is served in line with the folder and the version policy (see the class)."""
        async with self._sync_lock:
            try:
                on_disk = {
                    disease: versions(self.settings.models_dir, disease)
                    for disease in disease_names(self.settings.models_dir, strict=True)
                }
            except OSError as error:  # keep serving what is loaded; report it
                self.scan_error = f"cannot read {self.settings.models_dir}: {error}"
                log.error(self.scan_error)
                return
            self.scan_error = None
            for disease in sorted(set(on_disk) | set(self._versions)):
                await self._sync_disease(disease, on_disk.get(disease))

    async def _sync_disease(self, disease: str, found: list[int] | None) -> None:
        """found: the version folders on disk; None when the disease folder itself is gone."""
        entries = self._versions.setdefault(disease, {})
        if found == []:  # a disease folder without versions: reported, as a failed entry
            if NO_VERSION not in entries:
                log.error("%s: no integer version folder", disease)
            entries[NO_VERSION] = ServedModel(disease=disease, version=None, state=Failed("no integer version folder"))
        found = found or []
        wanted = chosen_versions(
            found,
            self.settings.version_policy,
            latest=self.settings.version_policy_latest,
            specific=self.settings.version_policy_versions.get(disease),
        )
        for version in wanted:
            path = version_dir(self.settings.models_dir, disease, version)
            current = entries.get(version)
            fingerprint = _fingerprint(path)
            if current is None or (current.status is ModelStatus.FAILED and current.fingerprint != fingerprint):
                served = ServedModel(disease=disease, version=version, fingerprint=fingerprint)
                entries[version] = served
                await self._load(served)
            elif current.status is ModelStatus.READY and current.fingerprint != fingerprint:
                await self._refresh(entries, current, fingerprint)
        # Versions the policy no longer wants go only once a wanted one answers; removed folders go now.
        a_wanted_one_serves = any(entries[v].status is ModelStatus.READY for v in wanted if v in entries)
        for version, served in list(entries.items()):
            if version == NO_VERSION and not found:
                continue
            if version not in wanted and (version not in found or a_wanted_one_serves):
                del entries[version]
                self._retire(served)
        if not entries and not found:
            del self._versions[disease]

    async def _refresh(
        self, entries: dict[int, ServedModel], current: ServedModel, fingerprint: tuple[int, ...]
    ) -> None:
        """A served version whose files changed on disk: what is served must be what is on disk. A new card alone
        (the `record-*` commands rewrite cards) is read in place; any other change loads the version anew beside
        the old one, which keeps answering until the new one is ready, and keeps answering if it fails."""
        assert current.version is not None
        loaded = current.loaded  # `_sync_disease` refreshes ready versions only
        path = version_dir(self.settings.models_dir, current.disease, current.version)
        if current.card_stamp != _card_stamp(path) and current.fingerprint_without_card == _without_card(fingerprint):
            try:
                card = await asyncio.to_thread(read_card, path / METADATA_FILE)
            except (OSError, ValueError) as error:
                log.error("%s version %s: the rewritten card is not readable, keeping the old one: %s",
                          current.disease, current.version, error)  # fmt: skip
                return
            if card.input != loaded.card.input or card.disease != current.disease:
                log.error("%s version %s: the rewritten card changes the input or disease; not taken",
                          current.disease, current.version)  # fmt: skip
                return
            loaded.card = card
            current.fingerprint, current.card_stamp = fingerprint, _card_stamp(path)
            log.info("%s version %s: card reloaded", current.disease, current.version)
            return
        fresh = ServedModel(disease=current.disease, version=current.version, fingerprint=fingerprint)
        await self._load(fresh)
        if fresh.status is ModelStatus.READY:
            entries[current.version] = fresh
            self._retire(current)
            log.info("%s version %s: reloaded after its files changed", current.disease, current.version)
        else:
            current.fingerprint = fingerprint  # tried once; the next change tries again
            log.error("%s version %s changed on disk and no longer loads; the loaded copy keeps answering: %s",
                      current.disease, current.version, fresh.error)  # fmt: skip

    def _retire(self, served: ServedModel) -> None:
        log.info("%s version %s retired; closing after its in-flight requests", served.disease, served.version)
        task = asyncio.get_running_loop().create_task(self._close_when_idle(served))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, served: ServedModel) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        while served.in_flight > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if served.batcher is not None:
            await served.batcher.stop()
        del served  # the collection below frees its model, unless a request past the drain timeout still holds it
        async with self._sync_lock:  # a sync in progress may still hold the version in its frames
            memory.collect_released_objects()

    async def watch(self, interval_s: float) -> None:
        """Poll the models folder until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:  # a bad poll must not end polling
                log.exception("model folder poll failed")

    async def _load(self, served: ServedModel) -> None:
        assert served.version is not None  # a folder found on disk always has its version
        path = version_dir(self.settings.models_dir, served.disease, served.version)
        try:
            model = await asyncio.to_thread(load_model, path)
            await asyncio.to_thread(self._warm_up, model)
        except ModelLoadError as error:
            served.state = Failed(str(error))
            log.error("%s version %s failed to load: %s", served.disease, served.version, error)
            return
        except Exception as error:  # whatever else breaks one model must not stop the others
            served.state = Failed(f"{type(error).__name__}: {error}")
            log.exception("%s version %s failed to load", served.disease, served.version)
            return
        if model.card.disease != served.disease:
            served.state = Failed(f"{path}: card says disease {model.card.disease!r}")
            log.error(served.error)
            return
        served.card_stamp = _card_stamp(path)
        served.state = Ready(model, self._batcher_for(served, model) if self.settings.batching else None)
        log.info("%s version %s ready (input %s)", served.disease, served.version, model.card.input.spec().shape)

    def _batcher_for(self, served: ServedModel, model: LoadedModel) -> DynamicBatcher:
        """A started batcher for one version's model calls."""
        batcher = DynamicBatcher(
            model.analyse,
            max_batch_size=self.batch_size_for(model),
            name=f"{served.disease}-{served.version}",
            timeout_s=self.settings.batch_timeout_ms / 1000,
            gather_s=self.settings.batch_gather_ms / 1000,
            max_queue=self.settings.max_queue,
            observer=partial(self.batch_observer, served.disease, served.version) if self.batch_observer else None,
        )
        batcher.start()
        return batcher

    def _warm_up(self, model: LoadedModel) -> None:
        # load_model's probe already made the first call (batch 1), which runs the graph's one-off
        # set-up; later calls at new batch sizes showed no stall (measured with TF 2.21 on CPU), so
        # only the largest batch, whose buffers are the biggest, is left to warm.
        if self.settings.batching and self.batch_size_for(model) > 1:
            shape = model.card.input.spec().shape
            model.analyse(np.zeros((self.batch_size_for(model), *shape), dtype=np.float32))

    def batch_size_for(self, model: LoadedModel) -> int:
        """The largest batch of this model: MEDSCAN_MAX_BATCH_SIZE, fewer images where they are large, so that
        a batch holds at most MEDSCAN_MAX_BATCH_PIXELS (views included). A 448 px network's activations at
        batch 32 would take GBs; at 8, one tenth of that."""
        return model.card.batch_within(self.settings.max_batch_pixels, self.settings.max_batch_size)

    def get(self, disease: str, version: int | None = None) -> ServedModel:
        """The version to answer with: the pinned one, or the newest ready one."""
        entries = self._versions.get(disease)
        if not entries:
            raise UnknownDisease(disease, sorted(self.models))
        if version is None:
            served = self._default(entries)
        elif version in entries:
            served = entries[version]
        else:
            raise UnknownVersion(disease, version, sorted(entries))
        request_context.note_model(disease, served.version)
        if served.status is not ModelStatus.READY:
            raise ModelUnavailable(
                f"the {disease} model version {served.version} is {served.status.value}: "
                f"{served.error or 'not ready yet'}"
            )
        return served

    @contextmanager
    def admitted(self, served: ServedModel, count: int = 1) -> Iterator[Predictor]:
        """Let a request of `count` images in, or raise `Overloaded` at once when its model's queue
        is full, and give it the call that answers it. Call this before decoding: the admitted images
        count towards the queue from then on, and the batcher waits briefly for them."""
        if not isinstance(served.state, Ready):  # `get` hands out ready versions only
            raise ModelUnavailable(f"the {served.disease} model version {served.version} is {served.status.value}")
        model, batcher = served.state.model, served.state.batcher
        served.in_flight += 1
        try:
            if batcher is None:
                yield partial(self._predict_unbatched, model)
                return
            if count > batcher.max_queue:  # no retry could ever get it in: not a 503
                raise TooManyImages(count, batcher.max_queue)
            try:
                admission = batcher.admit(count)
            except QueueFull as error:
                raise Overloaded(served.disease) from error
            with admission:
                yield admission.submit_many
        finally:
            served.in_flight -= 1

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
        for task in list(self._retiring):
            await task
        for entries in self._versions.values():
            for served in entries.values():
                if served.batcher is not None:
                    await served.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

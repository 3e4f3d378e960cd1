"""The one model lookup behind every protocol (ours, TF Serving's REST, KServe V2): which versions are held and in
what state, whether one answers, what it takes. It raises the domain errors of app/runtime/errors.py, which each
protocol maps once to its own error shape, as KServe's DataPlane does; the protocols never read the registry's
entries themselves. Answering goes through the inference pipeline, which looks the version up the same way."""

from __future__ import annotations

from dataclasses import dataclass

from app.contract.model_card import ModelCard
from app.contract.model_store import is_version_name
from app.runtime.errors import ModelUnavailable, UnknownDisease, UnknownVersion
from app.runtime.registry import ModelRegistry, ModelStatus, ServedModel


@dataclass(frozen=True)
class VersionState:
    """One version as a protocol reports it: loading, ready or failed, with its card once loaded."""

    disease: str
    version: int | None  # None: a disease folder with no version folder in it
    status: ModelStatus
    error: str | None
    card: ModelCard | None
    explainable: bool

    @property
    def ready(self) -> bool:
        return self.status is ModelStatus.READY


@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded version takes and which versions of its disease answer."""

    disease: str
    version: int
    input_shape: tuple[int, int, int]  # H x W x C of the model's input
    ready_versions: list[int]  # oldest first
    card: ModelCard


def _state(served: ServedModel) -> VersionState:
    return VersionState(
        disease=served.disease,
        version=served.version,
        status=served.status,
        error=served.error,
        card=served.card,
        explainable=served.model is not None and served.model.can_explain,
    )


def parse_version(disease: str, version: str | None) -> int | None:
    """A version as a URL gives it: digits, else no version of `disease` the service could hold."""
    if version is None:
        return None
    if not is_version_name(version):
        raise UnknownVersion(disease, version, [])
    return int(version)


class ModelLookup:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    @property
    def diseases(self) -> list[str]:
        return list(self._registry.models)

    def state(self, disease: str, version: int | None = None) -> VersionState:
        """The version asked for, else the one that answers unpinned requests; in any state."""
        return _state(self._held(disease, version))

    def states(self, disease: str, version: int | None = None) -> list[VersionState]:
        """Every version held, newest first; or only the one asked for."""
        if version is not None:
            return [self.state(disease, version)]
        held = self._registry.versions(disease)
        if not held:
            raise UnknownDisease(disease, sorted(self._registry.models))
        return [_state(served) for served in reversed(held.values())]

    def model_ready(self, disease: str, version: int | None = None) -> bool:
        return self.state(disease, version).ready

    def model_metadata(self, disease: str, version: int | None = None) -> ModelMetadata:
        served = self._held(disease, version)
        if served.model is None or served.version is None:
            raise ModelUnavailable(
                f"the {disease} model version {served.version} is {served.status.value}: "
                f"{served.error or 'not ready yet'}"
            )
        card = served.model.card
        ready = [v for v, s in self._registry.versions(disease).items() if s.status is ModelStatus.READY]
        return ModelMetadata(disease, served.version, card.input.spec().shape, ready, card)

    def _held(self, disease: str, version: int | None) -> ServedModel:
        held = self._registry.versions(disease)
        if not held:
            raise UnknownDisease(disease, sorted(self._registry.models))
        if version is None:
            return self._registry.models[disease]
        if version not in held:
            raise UnknownVersion(disease, version, sorted(held))
        return held[version]

"""GET /models and GET /models/{disease}: what is served, with each model's card."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PipelineDep, RegistryDep
from app.api.errors import responses
from app.api.schemas import ModelInfo, ModelList, VersionInfo
from app.errors import UnknownDisease
from app.modality_check import ModalityCheck
from app.registry import ModelRegistry, ServedModel

router = APIRouter(tags=["models"])


def _info(registry: ModelRegistry, served: ServedModel) -> ModelInfo:
    held = reversed(registry.versions(served.disease).values())
    return ModelInfo(
        disease=served.disease,
        version=served.version,
        status=served.status,
        error=served.error,
        explainable=served.model is not None and served.model.can_explain,
        card=served.card,
        versions=[VersionInfo(version=v.version, status=v.status, error=v.error) for v in held],
    )


def model_list(registry: ModelRegistry, modality: ModalityCheck | None = None) -> ModelList:
    return ModelList(
        models=[_info(registry, served) for served in registry.models.values()],
        scan_error=registry.scan_error,
        modality_check=modality.card if modality else None,
    )


@router.get("/models", response_model=ModelList, summary="Every model found, loaded or failed")
async def list_models(registry: RegistryDep, pipeline: PipelineDep) -> ModelList:
    return model_list(registry, pipeline.modality)


@router.get("/models/{disease}", response_model=ModelInfo, responses=responses(404), summary="One model")
async def get_model(disease: str, registry: RegistryDep) -> ModelInfo:
    served = registry.models.get(disease)
    if served is None:
        raise UnknownDisease(disease, sorted(registry.models))
    return _info(registry, served)

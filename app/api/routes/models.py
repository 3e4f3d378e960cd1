"""GET /models and GET /models/{disease}: what is served, with each model's card."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RegistryDep
from app.api.errors import responses
from app.api.schemas import ModelInfo, ModelList
from app.errors import UnknownDisease
from app.registry import ServedModel

router = APIRouter(tags=["models"])


def _info(served: ServedModel) -> ModelInfo:
    return ModelInfo(disease=served.disease, version=served.version, status=served.status,
                     error=served.error, explainable=served.model is not None and served.model.can_explain,
                     card=served.card)


@router.get("/models", response_model=ModelList, summary="Every model found, loaded or failed")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[_info(served) for served in registry.models.values()])


@router.get("/models/{disease}", response_model=ModelInfo, responses=responses(404), summary="One model")
async def get_model(disease: str, registry: RegistryDep) -> ModelInfo:
    served = registry.models.get(disease)
    if served is None:
        raise UnknownDisease(disease, sorted(registry.models))
    return _info(served)

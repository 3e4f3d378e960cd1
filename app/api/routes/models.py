"""GET /models and GET /models/{disease}: what is served, with each model's card."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import LookupDep, PipelineDep
from app.api.errors import responses
from app.api.schemas import ModelInfo, ModelList, VersionInfo
from app.runtime.modality_check import ModalityCheck
from app.runtime.model_lookup import ModelLookup

router = APIRouter(tags=["models"])


def _info(lookup: ModelLookup, disease: str) -> ModelInfo:
    answering = lookup.state(disease)
    return ModelInfo(
        disease=disease,
        version=answering.version,
        status=answering.status,
        error=answering.error,
        explainable=answering.explainable,
        card=answering.card,
        versions=[VersionInfo(version=v.version, status=v.status, error=v.error) for v in lookup.states(disease)],
    )


def model_list(lookup: ModelLookup, scan_error: str | None, modality: ModalityCheck | None = None) -> ModelList:
    return ModelList(
        models=[_info(lookup, disease) for disease in lookup.diseases],
        scan_error=scan_error,
        modality_check=modality.card if modality else None,
    )


@router.get("/models", response_model=ModelList, summary="Every model found, loaded or failed")
async def list_models(lookup: LookupDep, pipeline: PipelineDep) -> ModelList:
    return model_list(lookup, pipeline.registry.scan_error, pipeline.modality)


@router.get("/models/{disease}", response_model=ModelInfo, responses=responses(404), summary="One model")
async def get_model(disease: str, lookup: LookupDep) -> ModelInfo:
    return _info(lookup, disease)

"""POST /admin/reload: look at the models folder now instead of at the next poll."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import LookupDep, PipelineDep, RegistryDep
from app.api.routes.models import model_list
from app.api.schemas import ModelList

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ModelList,
    summary="Load new or changed versions, retire removed ones; answers when done, with every model's state",
)
async def reload_models(registry: RegistryDep, lookup: LookupDep, pipeline: PipelineDep) -> ModelList:
    await registry.sync()
    return model_list(lookup, registry.scan_error, pipeline.modality)

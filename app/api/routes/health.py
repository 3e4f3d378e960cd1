"""Liveness and readiness probes (Kubernetes, Docker HEALTHCHECK)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import LookupDep, RegistryDep
from app.api.schemas import Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Liveness, summary="The process answers")
async def live() -> Liveness:
    return Liveness()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Every model found has loaded and warmed up, or failed and been reported",
)
async def ready(registry: RegistryDep, lookup: LookupDep) -> JSONResponse:
    body = Readiness(
        status="ready" if registry.ready else "starting",
        models={name: lookup.state(name).status for name in lookup.diseases},
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if registry.ready else 503)

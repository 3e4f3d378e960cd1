"""POST /explain/{disease}: the Grad-CAM overlay of one image, as a PNG a person can look at."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import Response

from app.api.deps import PipelineDep
from app.api.errors import responses
from app.api.routes.predict import PrevalenceQuery, ThresholdQuery, VersionQuery, read_uploads

router = APIRouter(tags=["predict"])


@router.post(
    "/explain/{disease}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the heatmap over the image"},
        **responses(400, 404, 409, 413, 415, 422, 503),
    },
    summary="Grad-CAM overlay of one image for its answered class (label and score in the headers)",
)
async def explain(
    disease: str,
    file: Annotated[UploadFile, File(description="one image, as for /predict")],
    pipeline: PipelineDep,
    threshold: ThresholdQuery = None,
    prevalence: PrevalenceQuery = None,
    version: VersionQuery = None,
) -> Response:
    (outcome,) = await pipeline.screen(
        disease,
        await read_uploads([file]),
        threshold=threshold,
        prevalence=prevalence,
        explain=True,
        version=version,
    )
    if isinstance(outcome, Exception):
        raise outcome
    assert outcome.explanation is not None
    headers = {
        "X-MedScan-Label": outcome.label,
        "X-MedScan-Score": f"{outcome.score:.6f}",
        "X-MedScan-Model-Version": str(outcome.model_version),
        "X-MedScan-In-Distribution": {True: "true", False: "false", None: "unknown"}[outcome.in_distribution],
    }
    return Response(outcome.explanation.overlay_png, media_type="image/png", headers=headers)

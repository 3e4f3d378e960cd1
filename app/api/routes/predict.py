"""POST /predict/{disease}: images in, calibrated, thresholded, checked answers out."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from app.api.deps import PipelineDep
from app.api.errors import error_detail, responses
from app.api.schemas import (
    Explanation,
    ImageError,
    ImageSize,
    OutOfDistribution,
    Prediction,
    PredictionItem,
    Predictions,
)
from app.errors import MissingImage
from app.inference import Screening, Upload

router = APIRouter(tags=["predict"])

FileParts = Annotated[
    list[UploadFile] | None,
    File(
        description="one or several images (repeat the field): PNG, JPEG, BMP, TIFF, GIF (first frame) or DICOM; "
        "or, instead of a form, one image as the raw body with Content-Type image/* or application/dicom"
    ),
]
RAW_TYPES = ("image/", "application/dicom")  # a raw body: one image, no multipart parsing
ThresholdQuery = Annotated[
    float | None,
    Query(
        ge=0,
        le=1,
        description="decision threshold on the calibrated P(infected); default: the model's screening threshold",
    ),
]
ExplainQuery = Annotated[bool, Query(description="add a Grad-CAM heatmap and overlay to each answer")]
VersionQuery = Annotated[int | None, Query(ge=1, description="pin a model version (default: the newest ready one)")]


async def read_uploads(parts: list[UploadFile]) -> list[Upload]:
    return [Upload(data=await part.read(), filename=part.filename, content_type=part.content_type) for part in parts]


async def read_request_images(request: Request, parts: list[UploadFile] | None) -> list[Upload]:
    """The form's `file` parts, or the raw body as one image; neither is the error a missing form field gives."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if parts is None and content_type.startswith(RAW_TYPES):
        return [Upload(data=await request.body(), content_type=content_type)]
    if parts is None:
        raise MissingImage()
    return await read_uploads(parts)


def present(screening: Screening) -> Prediction:
    explanation = screening.explanation
    return Prediction(
        disease=screening.disease,
        model_version=screening.model_version,
        label=screening.label,
        score=screening.score,
        probabilities=screening.probabilities,
        threshold=screening.threshold,
        in_distribution=screening.in_distribution,
        out_of_distribution=(
            OutOfDistribution(
                distance=screening.ood_distance,
                threshold=screening.ood_threshold,
                distance_percentile=screening.distance_percentile,
                unlike_training_sites=screening.unlike_training_sites,
            )
            if screening.ood_distance is not None and screening.ood_threshold is not None
            else None
        ),
        warning=screening.warning,
        image=ImageSize(width=screening.image_size[0], height=screening.image_size[1])
        if screening.image_size
        else None,
        explanation=Explanation(
            target_class=screening.label,
            heatmap=explanation.heatmap.round(3).tolist(),
            overlay_png=base64.b64encode(explanation.overlay_png).decode("ascii"),
        )
        if explanation
        else None,
        intended_use=screening.intended_use,
    )


@router.post(
    "/predict/{disease}",
    response_model=Prediction | Predictions,
    responses=responses(404, 409, 413, 415, 422, 503),
    summary="Screen one image (answer: a prediction) or several (answer: a list, one entry per image)",
)
async def predict(
    disease: str,
    request: Request,
    pipeline: PipelineDep,
    file: FileParts = None,
    threshold: ThresholdQuery = None,
    explain: ExplainQuery = False,
    version: VersionQuery = None,
) -> Prediction | Predictions:
    uploads = await read_request_images(request, file)
    outcomes = await pipeline.screen(disease, uploads, threshold=threshold, explain=explain, version=version)
    if len(outcomes) == 1:  # one image: its answer, or its error as the response
        (outcome,) = outcomes
        if isinstance(outcome, Exception):
            raise outcome
        return present(outcome)
    return Predictions(
        results=[
            ImageError(error=error_detail(outcome), filename=upload.filename)
            if isinstance(outcome, Exception)
            else PredictionItem(**present(outcome).model_dump(), filename=upload.filename)
            for upload, outcome in zip(uploads, outcomes, strict=True)
        ]
    )

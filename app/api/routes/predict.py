"""POST /predict/{disease}: images in, calibrated, thresholded, checked answers out."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response, UploadFile

from app.api.deps import PipelineDep, SettingsDep
from app.api.errors import error_detail, responses
from app.api.multipart import form_files
from app.api.query import PARAMETERS as QUERY_PARAMETERS
from app.api.query import PREVALENCE_DOC, THRESHOLD_DOC, VERSION_DOC, predict_options
from app.api.schemas import Prediction, Predictions
from app.api.spool import spooled
from app.runtime.errors import MissingImage
from app.runtime.inference import Screening, Upload
from app.settings import Settings

router = APIRouter(tags=["predict"])

FIELD = "file"  # the form field that carries the images, repeated for several
RAW_TYPES = ("image/", "application/dicom")  # a raw body: one image, no multipart parsing
# The body is read by the route itself (app/api/multipart.py), not declared as a File parameter: FastAPI's form
# parsing cost more than decoding the image. So its two forms are documented here.
BINARY = {"type": "string", "format": "binary"}
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FIELD],
                "properties": {
                    FIELD: {
                        "type": "array",
                        "minItems": 1,
                        "items": BINARY,
                        "description": "one or several images (repeat the field): PNG, JPEG, BMP, TIFF, GIF "
                        "(first frame) or DICOM",
                    }
                },
            }
        },
        # A raw body is one image: empty is refused. A form's empty part is answered in its place, as any image
        # that cannot be read, beside the others' answers.
        "image/*": {"schema": BINARY | {"minLength": 1}},
        "application/dicom": {"schema": BINARY | {"minLength": 1}},
    },
}
# /explain's query parameters; /predict reads its own by hand (app/api/query.py)
ThresholdQuery = Annotated[float | None, Query(ge=0, le=1, description=THRESHOLD_DOC)]
VersionQuery = Annotated[int | None, Query(ge=1, description=VERSION_DOC)]
PrevalenceQuery = Annotated[float | None, Query(gt=0, lt=1, description=PREVALENCE_DOC)]


async def read_uploads(parts: list[UploadFile]) -> list[Upload]:
    return [Upload(data=await part.read(), filename=part.filename, content_type=part.content_type) for part in parts]


async def read_request_images(request: Request, settings: Settings) -> list[Upload]:
    """The form's `file` parts, or the raw body as one image; anything else is MissingImage. The body streams
    into a spool (app/api/spool.py): one copy of each image is what stays in memory."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type.startswith(RAW_TYPES) or media_type == "multipart/form-data":
        async with spooled(request, settings.spool_memory_bytes, settings.spool_dir) as spool:
            if media_type != "multipart/form-data":
                return [Upload(data=spool.read(), content_type=media_type)]
            files = form_files(spool.view(), content_type, FIELD)
        if files:
            return files
    raise MissingImage()


def answer(screening: Screening) -> dict[str, Any]:
    """A screening as the `Prediction` schema's JSON object, built directly: validating our own answer with
    pydantic on every request cost more than the model call (tests/test_predict.py checks it fits the schema)."""
    explanation = screening.explanation
    return {
        "disease": screening.disease,
        "model_version": screening.model_version,
        "label": screening.label,
        "score": screening.score,
        "probabilities": screening.probabilities,
        "threshold": screening.threshold,
        "prevalence": screening.prevalence,
        "in_distribution": screening.in_distribution,
        "out_of_distribution": (
            {
                "distance": screening.ood_distance,
                "threshold": screening.ood_threshold,
                "distance_percentile": screening.distance_percentile,
                "unlike_training_sites": screening.unlike_training_sites,
            }
            if screening.ood_distance is not None and screening.ood_threshold is not None
            else None
        ),
        "modality": (
            {
                "kind": screening.kind.kind.value,
                "expected": screening.kind.expected.value,
                "probability": round(screening.kind.probability, 4),
                "minimum": screening.kind.minimum,
                "wrong_kind": screening.kind.wrong_kind,
            }
            if screening.kind
            else None
        ),
        "warning": screening.warning,
        "image": (
            {"width": screening.image_size[0], "height": screening.image_size[1]} if screening.image_size else None
        ),
        "explanation": (
            {
                "target_class": screening.label,
                "heatmap": explanation.heatmap.round(3).tolist(),
                "overlay_png": base64.b64encode(explanation.overlay_png).decode("ascii"),
            }
            if explanation
            else None
        ),
        "intended_use": screening.intended_use,
    }


class JSONAnswer(Response):
    """JSON encoded by orjson, without re-validating what `answer` built."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@router.post(
    "/predict/{disease}",
    response_model=Prediction | Predictions,
    responses=responses(400, 404, 409, 413, 415, 422, 503),
    summary="Screen one image (answer: a prediction) or several (answer: a list, one entry per image)",
    openapi_extra={"requestBody": REQUEST_BODY, "parameters": QUERY_PARAMETERS},
)
async def predict(disease: str, request: Request, pipeline: PipelineDep, settings: SettingsDep) -> JSONAnswer:
    options = predict_options(request.query_params)
    uploads = await read_request_images(request, settings)
    outcomes = await pipeline.screen(
        disease,
        uploads,
        threshold=options.threshold,
        prevalence=options.prevalence,
        explain=options.explain,
        version=options.version,
    )
    if len(outcomes) == 1:  # one image: its answer, or its error as the response
        (outcome,) = outcomes
        if isinstance(outcome, Exception):
            raise outcome
        return JSONAnswer(answer(outcome))
    return JSONAnswer(
        {
            "results": [
                {"error": error_detail(outcome).model_dump(), "filename": upload.filename}
                if isinstance(outcome, Exception)
                else {**answer(outcome), "filename": upload.filename}
                for upload, outcome in zip(uploads, outcomes, strict=True)
            ]
        }
    )

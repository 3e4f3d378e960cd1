"""DICOMweb STOW-RS in: `POST /dicomweb/studies[/{study}]`, `multipart/related; type="application/dicom"`.

Each instance is routed to the models of its kind by its attributes (or to `?disease=`), answered through the
one inference pipeline, and an SR of each answer queued for the PACS (app/pacs/). The answer is the STOW-RS
response in DICOM JSON (PS3.18 10.5): ReferencedSOPSequence for the instances answered, FailedSOPSequence with a
reason for each that was not (unreadable, not an image, no route); 200 when all were answered, 202 when some,
409 when none. With `Accept: application/json` MedScan's answers come alongside (`{"dicom": ..., "answers": ...}`).
Auth, body limit, metrics and error shape are the service's, as for /predict.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import SettingsDep
from app.api.errors import error_detail, responses
from app.api.multipart import MalformedForm, NotMultipartRelated, Part, parts_of
from app.api.routes.predict import answer
from app.api.spool import spooled
from app.pacs.ingest import CANNOT_UNDERSTAND, InstanceOutcome, PacsIngest

router = APIRouter(prefix="/dicomweb", tags=["DICOMweb (STOW-RS)"])
DICOM_JSON = "application/dicom+json"
# The body is split by app/api/multipart.py; its form and the answers are documented here.
STOW_BODY = {
    "required": True,
    "content": {
        'multipart/related; type="application/dicom"': {
            "schema": {"type": "string", "format": "binary"},
            "description": "one DICOM instance (Part 10 file) per part",
        }
    },
}
DISEASE_QUERY = {
    "name": "disease",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "answer every instance with this model, instead of routing each by its attributes",
}
STOW_ANSWER = {
    "content": {DICOM_JSON: {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}}
}
STOW_RESPONSES = {
    200: STOW_ANSWER | {"description": "every instance answered (Accept: application/json adds MedScan's answers)"},
    202: STOW_ANSWER | {"description": "some instances answered; FailedSOPSequence says why the others were not"},
    409: STOW_ANSWER | {"description": "no instance answered; FailedSOPSequence says why"},
} | responses(400, 413, 415)
STOW_EXTRA = {"requestBody": STOW_BODY, "parameters": [DISEASE_QUERY]}


def _ingest(request: Request) -> PacsIngest:
    return request.app.state.pacs


def _uid(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


def _referenced(outcome: InstanceOutcome) -> dict[str, Any]:
    return {"00081150": _uid("UI", outcome.sop_class_uid), "00081155": _uid("UI", outcome.sop_instance_uid)}


def stow_response(outcomes: list[InstanceOutcome], study: str | None) -> dict[str, Any]:
    """The STOW-RS response dataset, in DICOM JSON."""
    body: dict[str, Any] = {}
    if study:
        body["0020000D"] = _uid("UI", study)
    stored = [_referenced(outcome) for outcome in outcomes if outcome.ok]
    failed = [
        {**_referenced(outcome), "00081197": {"vr": "US", "Value": [outcome.failure_code]}}
        for outcome in outcomes
        if not outcome.ok
    ]
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    return body


def medscan_answers(outcomes: list[InstanceOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "sop_instance_uid": outcome.sop_instance_uid,
            "answers": {disease: answer(screening) for disease, screening in outcome.answers.items()},
            "errors": {disease: error_detail(error).model_dump() for disease, error in outcome.errors.items()},
            "failure": outcome.failure,
            "reports": outcome.reports,
        }
        for outcome in outcomes
    ]


async def _one(ingest: PacsIngest, part: Part, study: str | None, disease: str | None) -> InstanceOutcome:
    media_type = part.headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if media_type != "application/dicom":
        return InstanceOutcome(failure=f"a part of type {media_type}, not application/dicom",
                               failure_code=CANNOT_UNDERSTAND)  # fmt: skip
    return await ingest.instance(part.data, disease, study)


async def _store(request: Request, settings: SettingsDep, study: str | None) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/related":
        raise NotMultipartRelated('STOW-RS takes multipart/related; type="application/dicom" bodies')
    disease = request.query_params.get("disease")
    async with spooled(request, settings.spool_memory_bytes, settings.spool_dir) as spool:
        parts = list(parts_of(spool.view(), content_type))
    if not parts:
        raise MalformedForm("the multipart/related body has no part")
    ingest = _ingest(request)
    outcomes = list(await asyncio.gather(*(_one(ingest, part, study, disease) for part in parts)))
    answered = sum(outcome.ok for outcome in outcomes)
    status = 200 if answered == len(outcomes) else 202 if answered else 409
    body = stow_response(outcomes, study)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"dicom": body, "answers": medscan_answers(outcomes)}, status_code=status)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


@router.post(
    "/studies", summary="STOW-RS: store (screen) instances", responses=STOW_RESPONSES, openapi_extra=STOW_EXTRA
)
async def store_instances(request: Request, settings: SettingsDep) -> JSONResponse:
    return await _store(request, settings, None)


@router.post(
    "/studies/{study}", summary="STOW-RS: instances of one study", responses=STOW_RESPONSES, openapi_extra=STOW_EXTRA
)
async def store_study_instances(study: str, request: Request, settings: SettingsDep) -> JSONResponse:
    return await _store(request, settings, study)

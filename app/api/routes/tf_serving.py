"""TensorFlow Serving's REST API, as an adapter over the inference pipeline.

    GET  /v1/models/{name}[/versions/{v}]            model version status
    GET  /v1/models/{name}[/versions/{v}]/metadata   the signatures
    POST /v1/models/{name}[/versions/{v}]:predict    {"instances": [...]} or {"inputs": ...}

An instance is an encoded image as {"b64": "..."} (TF Serving's convention for binary strings) or an
already-preprocessed array of the model's input shape (H x W x C, values in [0, 1]); either may be
wrapped as {"image": ...}. Signatures: `serving_default` answers the calibrated probabilities
[P(infected), P(uninfected)] per instance, the same as `/predict`; `screening` answers MedScan's
whole answer per instance (label, score, threshold, in_distribution, ...). Errors are TF Serving's:
{"error": "<message>"}. Without /versions/{v} the newest ready version answers; a version the server
does not hold is 404, as in TF Serving.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import LookupDep, PipelineDep
from app.api.errors import STATUS_OF, TF_SERVING_PREFIX, ProtocolWords, protocol_answer, protocol_responses
from app.runtime.errors import UnknownVersion
from app.runtime.inference import InferencePipeline, Screening, Upload
from app.runtime.model_lookup import ModelMetadata, VersionState, parse_version
from app.runtime.registry import ModelStatus

router = APIRouter(prefix=TF_SERVING_PREFIX, tags=["TensorFlow Serving REST API"])
TARGET = re.compile(r"^(?P<name>[a-z][a-z0-9_]{0,63})(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:predict)?$")
SIGNATURES = ("serving_default", "screening")
INPUT_NAME = "image"


# The body is parsed here, in TF Serving's words for what is wrong with it; its shape is documented here.
INSTANCES = (
    'one per image: {"b64": "<the encoded image>"} or an H x W x C array of the model\'s input in [0, 1], '
    'either bare or as {"image": ...}'
)
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "signature_name": {"type": "string", "enum": list(SIGNATURES), "default": SIGNATURES[0]},
                    "instances": {"type": "array", "minItems": 1, "description": f"row format, {INSTANCES}"},
                    "inputs": {
                        "description": f'columnar format: the list, or {{"{INPUT_NAME}": the list}}; {INSTANCES}'
                    },
                },
                "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            }
        }
    },
}
JSON_OBJECT: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
PREDICT_ANSWER: dict[str, Any] = {
    "description": "`predictions` for the row format, `outputs` for the columnar one: one entry per instance, "
    "[P(infected), P(uninfected)] (serving_default) or MedScan's whole answer (screening)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"predictions": {"type": "array"}, "outputs": {"type": "array"}},
            }
        }
    },
}


class BadRequest(Exception):
    """A request TF Serving would answer with 400 INVALID_ARGUMENT."""


class MalformedRequest(Exception):
    """A path TF Serving does not serve: 404."""


# Every error a TF Serving route can meet is answered in TF Serving's shape, mapped here once.
TF_SERVING_WORDS: ProtocolWords = {
    BadRequest: lambda error: (400, str(error)),
    MalformedRequest: lambda error: (404, f"Malformed request: {error}"),
    UnknownVersion: lambda error: (404, f"Servable not found for request: Specific({error.disease}, {error.version})"),
}


def _tf_serving_error(error: Exception) -> JSONResponse:
    return protocol_answer(error, TF_SERVING_WORDS)


ANSWERED: tuple[type[Exception], ...] = (BadRequest, MalformedRequest, *STATUS_OF)


def _parse(target: str) -> re.Match[str]:
    match = TARGET.match(target)
    if match is None:
        raise MalformedRequest(target)
    return match


def _version(match: re.Match[str]) -> int | None:
    return parse_version(match["name"], match["version"])


@router.get(
    "/{target:path}",
    summary="Model version status, or with /metadata the signatures",
    responses={
        200: {"description": "model_version_status, or the metadata", "content": JSON_OBJECT},
        **protocol_responses(404, 503),
    },
)
async def status_or_metadata(target: str, lookup: LookupDep) -> JSONResponse:
    try:
        match = _parse(target)
        if match["rest"] is None:  # status of every version held, or of the one asked for
            states = lookup.states(match["name"], _version(match))
            return JSONResponse({"model_version_status": [_version_status(state) for state in states]})
        if match["rest"] != "/metadata":
            raise MalformedRequest(f"GET {target}")
        return JSONResponse(_metadata(lookup.model_metadata(match["name"], _version(match))))
    except ANSWERED as error:
        return _tf_serving_error(error)


@router.post(
    "/{target:path}",
    summary=":predict with instances (row format) or inputs (columnar)",
    responses={200: PREDICT_ANSWER, **protocol_responses(400, 404, 503)},
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def predict(target: str, request: Request, lookup: LookupDep, pipeline: PipelineDep) -> JSONResponse:
    try:
        match = _parse(target)
        if match["rest"] != ":predict":
            raise MalformedRequest(f"POST {target} (only :predict is served)")
        body = await _json(request)
        model = lookup.model_metadata(match["name"], _version(match))
        signature = body.get("signature_name") or "serving_default"
        if signature not in SIGNATURES:
            raise BadRequest(
                f'Serving signature name: "{signature}" not found in signature def; served: {", ".join(SIGNATURES)}'
            )
        row_format = "instances" in body
        instances = _instances(body)
        answers = await _screen(pipeline, model, instances)
        values = [_value(answer, signature) for answer in answers]
        if row_format:
            return JSONResponse({"predictions": values})
        return JSONResponse({"outputs": values})
    except ANSWERED as error:
        return _tf_serving_error(error)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # nesting deeper than the parser's stack is not JSON we take
        raise BadRequest("JSON Parse error: the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("JSON Value: the request body must be an object")
    return body


def _instances(body: dict[str, Any]) -> list[Any]:
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("JSON Value: exactly one of 'instances' or 'inputs' must be given")
    values = body.get("instances", body.get("inputs"))
    if isinstance(values, dict):  # named input (columnar, or a one-key object)
        if set(values) != {INPUT_NAME}:
            raise BadRequest(f"input names {sorted(values)} do not match the signature's: ['{INPUT_NAME}']")
        values = values[INPUT_NAME]
    if not isinstance(values, list) or not values:
        raise BadRequest("JSON Value: instances/inputs must be a non-empty list")
    return [value[INPUT_NAME] if isinstance(value, dict) and INPUT_NAME in value else value for value in values]


async def _screen(pipeline: InferencePipeline, model: ModelMetadata, instances: list[Any]) -> list[Screening]:
    """Encoded images through the decoding pipeline, arrays straight to the model; order kept."""
    shape = model.input_shape
    encoded = [(i, _decode_b64(v)) for i, v in enumerate(instances) if isinstance(v, dict)]
    arrays = [(i, _array(v, shape)) for i, v in enumerate(instances) if not isinstance(v, dict)]
    answers: dict[int, Screening] = {}
    if encoded:
        outcomes = await pipeline.screen(model.disease, [Upload(data) for _, data in encoded], version=model.version)
        for (index, _), outcome in zip(encoded, outcomes, strict=True):
            if isinstance(outcome, Exception):
                raise outcome  # TF Serving fails the whole request
            answers[index] = outcome
    if arrays:
        if len({array.shape for _, array in arrays}) > 1:
            raise BadRequest(f"array instances must all have the model's input shape {list(shape)}")
        batch = np.stack([array for _, array in arrays])
        screened = await pipeline.screen_arrays(model.disease, batch, version=model.version)
        for (index, _), answer in zip(arrays, screened, strict=True):
            answers[index] = answer
    return [answers[i] for i in range(len(instances))]


def _decode_b64(value: dict[str, Any]) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest('an encoded image must be {"b64": "<base64>"}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the b64 value is not valid base64") from None


def _array(value: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """An array instance as float32; the pipeline checks its shape and values."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest("an instance must be an encoded image or a numeric array") from None
    return array[..., np.newaxis] if array.shape == shape[:2] and shape[2] == 1 else array


def _value(answer: Screening, signature: str) -> Any:
    if signature == "screening":
        return {
            "label": answer.label,
            "score": answer.score,
            "probabilities": answer.probabilities,
            "threshold": answer.threshold,
            "prevalence": answer.prevalence,
            "in_distribution": answer.in_distribution,
            "ood_distance": answer.ood_distance,
            "model_version": answer.model_version,
        }
    return [answer.score, 1.0 - answer.score]


def _version_status(state: VersionState) -> dict[str, Any]:
    code, message = ("OK", "") if state.status is not ModelStatus.FAILED else ("UNKNOWN", state.error or "")
    return {
        "version": str(state.version or 0),
        "state": {ModelStatus.READY: "AVAILABLE", ModelStatus.LOADING: "LOADING", ModelStatus.FAILED: "END"}[
            state.status
        ],
        "status": {"error_code": code, "error_message": message},
    }


def _tensor(dtype: str, dims: list[int], name: str) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": name,
    }


def _metadata(model: ModelMetadata) -> dict[str, Any]:
    image = {INPUT_NAME: _tensor("DT_FLOAT", [-1, *model.input_shape], f"{INPUT_NAME}:0")}
    return {
        "model_spec": {"name": model.disease, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": image,
                        "outputs": {"probabilities": _tensor("DT_FLOAT", [-1, 2], "probabilities:0")},
                        "method_name": "tensorflow/serving/predict",
                    },
                    "screening": {
                        "inputs": image,
                        "outputs": {
                            name: _tensor(dtype, [-1], f"{name}:0")
                            for name, dtype in (
                                ("label", "DT_STRING"),
                                ("score", "DT_DOUBLE"),
                                ("threshold", "DT_DOUBLE"),
                                ("prevalence", "DT_DOUBLE"),
                                ("in_distribution", "DT_BOOL"),
                                ("ood_distance", "DT_DOUBLE"),
                            )
                        },
                        "method_name": "tensorflow/serving/predict",
                    },
                }
            }
        },
    }

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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import PipelineDep, RegistryDep
from app.api.errors import STATUS_OF, protocol_error
from app.errors import ModelUnavailable, UnknownDisease, UnknownVersion
from app.inference import Screening, Upload
from app.registry import ModelRegistry, ModelStatus, ServedModel

router = APIRouter(prefix="/v1/models", tags=["TensorFlow Serving REST API"])
TARGET = re.compile(r"^(?P<name>[a-z][a-z0-9_]{0,63})(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:predict)?$")
SIGNATURES = ("serving_default", "screening")
INPUT_NAME = "image"


class BadRequest(Exception):
    """A request TF Serving would answer with 400 INVALID_ARGUMENT."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@contextmanager
def _tf_serving_errors() -> Iterator[None]:
    """Our domain errors, in TF Serving's shape."""
    try:
        yield
    except BadRequest as error:
        raise _Answer(_error(400, str(error))) from None
    except tuple(STATUS_OF) as error:  # type: ignore[misc]
        raise _Answer(protocol_error(error)) from None


class _Answer(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def _served(registry: ModelRegistry, name: str, version: str | None) -> ServedModel:
    if not registry.versions(name):
        raise UnknownDisease(name, sorted(registry.models))
    try:
        return registry.get(name, int(version) if version is not None else None)
    except UnknownVersion:
        raise _Answer(_error(404, f"Servable not found for request: Specific({name}, {version})")) from None


def _parse(target: str) -> re.Match[str]:
    match = TARGET.match(target)
    if match is None:
        raise _Answer(_error(404, f"Malformed request: {target}"))
    return match


@router.get("/{target:path}", summary="Model version status, or with /metadata the signatures")
async def status_or_metadata(target: str, registry: RegistryDep) -> JSONResponse:
    try:
        match = _parse(target)
        with _tf_serving_errors():
            if match["rest"] is None:  # status of every version held, or of the one asked for
                return JSONResponse(_status(registry, match["name"], match["version"]))
            if match["rest"] != "/metadata":
                raise _Answer(_error(404, f"Malformed request: GET {target}"))
            return JSONResponse(_metadata(_served(registry, match["name"], match["version"])))
    except _Answer as answer:
        return answer.response


@router.post("/{target:path}", summary=":predict with instances (row format) or inputs (columnar)")
async def predict(target: str, request: Request, pipeline: PipelineDep) -> JSONResponse:
    try:
        match = _parse(target)
        if match["rest"] != ":predict":
            raise _Answer(_error(404, f"Malformed request: POST {target} (only :predict is served)"))
        with _tf_serving_errors():
            body = await _json(request)
            served = _served(pipeline.registry, match["name"], match["version"])
            signature = body.get("signature_name") or "serving_default"
            if signature not in SIGNATURES:
                raise BadRequest(
                    f'Serving signature name: "{signature}" not found in signature def; served: {", ".join(SIGNATURES)}'
                )
            row_format = "instances" in body
            instances = _instances(body)
            answers = await _screen(pipeline, served, instances)
            values = [_value(answer, signature) for answer in answers]
            if row_format:
                return JSONResponse({"predictions": values})
            return JSONResponse({"outputs": values})
    except _Answer as answer:
        return answer.response


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
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


async def _screen(pipeline, served: ServedModel, instances: list[Any]) -> list[Screening]:
    """Encoded images through the decoding pipeline, arrays straight to the model; order kept."""
    shape = served.loaded.card.input.spec().shape
    encoded = [(i, _decode_b64(v)) for i, v in enumerate(instances) if isinstance(v, dict)]
    arrays = [(i, _array(v, shape)) for i, v in enumerate(instances) if not isinstance(v, dict)]
    answers: dict[int, Screening] = {}
    if encoded:
        outcomes = await pipeline.screen(served.disease, [Upload(data) for _, data in encoded], version=served.version)
        for (index, _), outcome in zip(encoded, outcomes, strict=True):
            if isinstance(outcome, Exception):
                raise outcome  # TF Serving fails the whole request
            answers[index] = outcome
    if arrays:
        if len({array.shape for _, array in arrays}) > 1:
            raise BadRequest(f"array instances must all have the model's input shape {list(shape)}")
        batch = np.stack([array for _, array in arrays])
        outcomes = await pipeline.screen_arrays(served.disease, batch, version=served.version)
        for (index, _), outcome in zip(arrays, outcomes, strict=True):
            answers[index] = outcome
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
            "in_distribution": answer.in_distribution,
            "ood_distance": answer.ood_distance,
            "model_version": answer.model_version,
        }
    return [answer.score, 1.0 - answer.score]


def _status(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    held = registry.versions(name)
    if not held:
        raise UnknownDisease(name, sorted(registry.models))
    if version is not None:
        if int(version) not in held:
            raise _Answer(_error(404, f"Servable not found for request: Specific({name}, {version})"))
        held = {int(version): held[int(version)]}
    return {"model_version_status": [_version_status(served) for served in reversed(held.values())]}


def _version_status(served: ServedModel) -> dict[str, Any]:
    state = {ModelStatus.READY: "AVAILABLE", ModelStatus.LOADING: "LOADING", ModelStatus.FAILED: "END"}[served.status]
    code, message = ("OK", "") if served.status is not ModelStatus.FAILED else ("UNKNOWN", served.error or "")
    return {
        "version": str(served.version or 0),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def _tensor(dtype: str, dims: list[int], name: str) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": name,
    }


def _metadata(served: ServedModel) -> dict[str, Any]:
    if served.model is None:
        raise ModelUnavailable(f"the {served.disease} model is {served.status.value}: {served.error or ''}")
    shape = list(served.model.card.input.spec().shape)
    image = {INPUT_NAME: _tensor("DT_FLOAT", [-1, *shape], f"{INPUT_NAME}:0")}
    return {
        "model_spec": {"name": served.disease, "signature_name": "", "version": str(served.version)},
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

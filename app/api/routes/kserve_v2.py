"""The Open Inference Protocol (KServe V2, as Triton serves it over HTTP), as an adapter over the
inference pipeline.

    GET  /v2                                             server metadata
    GET  /v2/health/live, /v2/health/ready               probes
    GET  /v2/models/{name}[/versions/{v}]                model metadata (inputs, outputs, versions)
    GET  /v2/models/{name}[/versions/{v}]/ready          200 when that version answers
    POST /v2/models/{name}[/versions/{v}]/infer          JSON, or the binary tensor data extension

One input per request: `image_bytes` (BYTES, shape [N] or [N, 1]: encoded images, as for /predict)
or `image` (FP32, [N, H, W, C] of the model's input, pixels / 255). Outputs, all by default:
`probabilities` (FP32 [N, 2], calibrated, in class order infected, uninfected), `label` (BYTES),
`score` (FP64, calibrated P(infected)), `threshold` (FP32), `in_distribution` (INT8: 1, 0, or -1 when
the version has no out-of-distribution check) and `ood_distance` (FP32, NaN when unchecked). Request
parameter `threshold` overrides the screening threshold; `prevalence` moves P(infected) to a clinic's share of
disease. Errors: {"error": "<message>"}.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import LookupDep, PipelineDep, RegistryDep
from app.api.errors import STATUS_OF, V2_PREFIX, ProtocolWords, protocol_answer, protocol_responses
from app.api.v2_tensors import (
    HEADER_LENGTH,
    Tensor,
    TensorError,
    encode_outputs,
    parameters_of,
    read_inputs,
    split_body,
)
from app.runtime.errors import UnknownDisease, UnknownVersion
from app.runtime.inference import InferencePipeline, Screening, Upload
from app.runtime.model_lookup import ModelLookup, parse_version

router = APIRouter(prefix=V2_PREFIX, tags=["Open Inference Protocol (KServe V2)"])
SERVER_NAME = "medscan"
EXTENSIONS = ["binary_tensor_data"]
ARRAY_INPUT, BYTES_INPUT = "image", "image_bytes"
OUTPUTS = {
    "probabilities": "FP32",
    "label": "BYTES",
    "score": "FP64",
    "threshold": "FP32",
    "in_distribution": "INT8",
    "ood_distance": "FP32",
}

# The body is read by app/api/v2_tensors.py (JSON, or JSON then binary tensor data); its shape is documented here.
_TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "the values, flat or nested; absent with binary_data_size"},
    },
}
_INPUT = _TENSOR | {
    "properties": _TENSOR["properties"]
    | {
        "name": {"type": "string", "enum": [BYTES_INPUT, ARRAY_INPUT]},
        "datatype": {"type": "string", "enum": ["BYTES", "FP32"]},
    }
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "description": "threshold, prevalence (numbers in (0, 1)), binary_data_output",
        },
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": _INPUT},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "enum": list(OUTPUTS)}, "parameters": {"type": "object"}},
            },
        },
    },
}
BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": f"the JSON request, then the tensors' bytes; the JSON's length in the {HEADER_LENGTH} header",
}
INFER_BODY = {
    "required": True,
    "content": {"application/json": {"schema": INFER_REQUEST}, "application/octet-stream": BINARY_BODY},
}
HEADER_PARAMETER = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "with an application/octet-stream body: the length of its JSON part",
}
INFER_ANSWER: dict[str, Any] = {
    "description": f"the outputs; with binary outputs asked for, the JSON then their bytes ({HEADER_LENGTH})",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model_name", "outputs"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "outputs": {"type": "array", "items": _TENSOR},
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
READY = {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "not ready", "content": READY}}

# Every error a V2 route can meet is answered in the protocol's shape (as Triton words it), mapped here once.
V2_WORDS: ProtocolWords = {
    TensorError: lambda error: (400, str(error)),
    UnknownDisease: lambda error: (404, f"Request for unknown model: '{error.name}' is not found"),
    UnknownVersion: lambda error: (
        404,
        f"Request for unknown model: '{error.disease}' version {error.version} is not found",
    ),
}


def _v2_error(error: Exception) -> JSONResponse:
    return protocol_answer(error, V2_WORDS)


ANSWERED: tuple[type[Exception], ...] = (TensorError, *STATUS_OF)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live", summary="The server answers")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Every model found has loaded or failed", responses=NOT_READY)
async def ready(registry: RegistryDep) -> JSONResponse:
    return JSONResponse({"ready": registry.ready}, status_code=200 if registry.ready else 503)


@router.get("/models/{name}", summary="Model metadata", responses=protocol_responses(404))
async def model_metadata(name: str, lookup: LookupDep) -> JSONResponse:
    return _metadata(lookup, name, None)


@router.get(
    "/models/{name}/versions/{version}", summary="Model metadata of one version", responses=protocol_responses(404)
)
async def version_metadata(name: str, version: str, lookup: LookupDep) -> JSONResponse:
    return _metadata(lookup, name, version)


@router.get("/models/{name}/ready", summary="200 when the model answers", responses=NOT_READY | protocol_responses(404))
async def model_ready(name: str, lookup: LookupDep) -> JSONResponse:
    return _ready(lookup, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="200 when that version answers",
    responses={**NOT_READY, **protocol_responses(404)},
)
async def version_ready(name: str, version: str, lookup: LookupDep) -> JSONResponse:
    return _ready(lookup, name, version)


@router.post(
    "/models/{name}/infer",
    summary="Inference with the newest ready version",
    responses={200: INFER_ANSWER, **protocol_responses(400, 404, 503)},
    openapi_extra={"requestBody": INFER_BODY, "parameters": [HEADER_PARAMETER]},
)
async def infer(name: str, request: Request, lookup: LookupDep, pipeline: PipelineDep) -> Response:
    return await _infer(lookup, pipeline, request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference with one version",
    responses={200: INFER_ANSWER, **protocol_responses(400, 404, 503)},
    openapi_extra={"requestBody": INFER_BODY, "parameters": [HEADER_PARAMETER]},
)
async def infer_version(
    name: str, version: str, request: Request, lookup: LookupDep, pipeline: PipelineDep
) -> Response:
    return await _infer(lookup, pipeline, request, name, version)


def _metadata(lookup: ModelLookup, name: str, version: str | None) -> JSONResponse:
    try:
        model = lookup.model_metadata(name, parse_version(name, version))
    except ANSWERED as error:
        return _v2_error(error)
    return JSONResponse(
        {
            "name": name,
            "versions": [str(v) for v in model.ready_versions],
            "platform": "tensorflow_savedmodel",
            "inputs": [
                {"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": ARRAY_INPUT, "datatype": "FP32", "shape": [-1, *model.input_shape]},
            ],
            "outputs": [
                {"name": output, "datatype": datatype, "shape": [-1, 2] if output == "probabilities" else [-1]}
                for output, datatype in OUTPUTS.items()
            ],
        }
    )


def _ready(lookup: ModelLookup, name: str, version: str | None) -> JSONResponse:
    try:
        is_ready = lookup.model_ready(name, parse_version(name, version))
    except ANSWERED as error:
        return _v2_error(error)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


async def _infer(
    lookup: ModelLookup, pipeline: InferencePipeline, request: Request, name: str, version: str | None
) -> Response:
    try:
        pinned = lookup.state(name, parse_version(name, version)).version
        body, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
        (image,) = _one_input(read_inputs(body, binary))
        parameters = parameters_of(body, "the request")
        threshold, prevalence = _number(parameters, "threshold"), _number(parameters, "prevalence")
        requested = _requested_outputs(body)
        answers = await _screen(pipeline, name, pinned, image, threshold, prevalence)
    except ANSWERED as error:
        return _v2_error(error)
    outputs = [tensor for tensor in _output_tensors(answers) if tensor.name in requested]
    binary_names = {n for n, as_binary in requested.items() if as_binary or parameters.get("binary_data_output")}
    header, chunks = encode_outputs(outputs, binary_names)
    header = {
        "model_name": name,
        "model_version": str(answers[0].model_version),
        **({"id": body["id"]} if "id" in body else {}),
        **header,
    }
    encoded = json.dumps(header).encode("utf-8")
    if not chunks:
        return Response(encoded, media_type="application/json")
    return Response(
        encoded + b"".join(chunks), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(encoded))}
    )


def _one_input(tensors: list[Tensor]) -> list[Tensor]:
    if len(tensors) != 1 or tensors[0].name not in (ARRAY_INPUT, BYTES_INPUT):
        raise TensorError(
            f"send exactly one input: '{BYTES_INPUT}' (BYTES, encoded images) or "
            f"'{ARRAY_INPUT}' (FP32, N x H x W x C in [0, 1]); got {[t.name for t in tensors]}"
        )
    tensor = tensors[0]
    expected = "BYTES" if tensor.name == BYTES_INPUT else "FP32"
    if tensor.datatype != expected:
        raise TensorError(f"input '{tensor.name}' must be {expected}, got {tensor.datatype}")
    if tensor.name == BYTES_INPUT and not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
        raise TensorError(f"input '{BYTES_INPUT}' must have shape [N] or [N, 1], got {tensor.shape}")
    return tensors


def _requested_outputs(body: dict[str, Any]) -> dict[str, bool]:
    """Output name -> whether it is wanted in binary; every output when none is named."""
    specs = body.get("outputs")
    if specs is None:
        return {name: False for name in OUTPUTS}
    if not isinstance(specs, list):
        raise TensorError("'outputs' must be a list")
    requested = {}
    for spec in specs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in OUTPUTS:
            raise TensorError(f"unknown output {name!r}; outputs: {', '.join(OUTPUTS)}")
        requested[name] = bool(parameters_of(spec, f"output {name!r}").get("binary_data", False))
    return requested


def _number(parameters: dict[str, Any], name: str) -> float | None:
    """A request parameter that must be a number where given (the pipeline checks its range)."""
    value = parameters.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise TensorError(f"parameter {name!r} must be a number from 0 to 1")
    return value


async def _screen(
    pipeline: InferencePipeline,
    name: str,
    version: int | None,
    image: Tensor,
    threshold: float | None,
    prevalence: float | None,
) -> list[Screening]:
    if image.datatype == "BYTES":
        outcomes = await pipeline.screen(
            name, [Upload(data) for data in image.value], threshold=threshold, prevalence=prevalence, version=version
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome  # one bad image fails the request, as in Triton
        return outcomes  # type: ignore[return-value]
    return await pipeline.screen_arrays(
        name, np.asarray(image.value, dtype=np.float32), threshold=threshold, prevalence=prevalence, version=version
    )


def _output_tensors(answers: list[Screening]) -> list[Tensor]:
    n = len(answers)
    return [
        Tensor("probabilities", "FP32", [n, 2], np.array([[a.score, 1 - a.score] for a in answers], np.float32)),
        Tensor("label", "BYTES", [n], [a.label.encode("utf-8") for a in answers]),
        Tensor("score", "FP64", [n], np.array([a.score for a in answers], np.float64)),
        Tensor("threshold", "FP32", [n], np.array([a.threshold for a in answers], np.float32)),
        Tensor(
            "in_distribution",
            "INT8",
            [n],
            np.array([-1 if a.in_distribution is None else int(a.in_distribution) for a in answers], np.int8),
        ),
        Tensor(
            "ood_distance",
            "FP32",
            [n],
            np.array([np.nan if a.ood_distance is None else a.ood_distance for a in answers], np.float32),
        ),
    ]

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
parameter `threshold` overrides the screening threshold. Errors: {"error": "<message>"}.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import PipelineDep, RegistryDep
from app.api.errors import STATUS_OF, protocol_error
from app.api.v2_tensors import HEADER_LENGTH, Tensor, TensorError, encode_outputs, read_inputs, split_body
from app.inference import InferencePipeline, Screening, Upload
from app.registry import ModelRegistry, ModelStatus, ServedModel

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe V2)"])
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _held(registry: ModelRegistry, name: str, version: str | None) -> ServedModel | JSONResponse:
    """The version asked for (any state), or the error answer."""
    held = registry.versions(name)
    if not held:
        return _error(404, f"Request for unknown model: '{name}' is not found")
    if version is None:
        return registry.models[name]
    if not version.isdigit() or int(version) not in held:
        return _error(404, f"Request for unknown model: '{name}' version {version} is not found")
    return held[int(version)]


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live", summary="The server answers")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Every model found has loaded or failed")
async def ready(registry: RegistryDep) -> JSONResponse:
    return JSONResponse({"ready": registry.ready}, status_code=200 if registry.ready else 503)


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, registry: RegistryDep) -> JSONResponse:
    return _metadata(registry, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata of one version")
async def version_metadata(name: str, version: str, registry: RegistryDep) -> JSONResponse:
    return _metadata(registry, name, version)


@router.get("/models/{name}/ready", summary="200 when the model answers")
async def model_ready(name: str, registry: RegistryDep) -> JSONResponse:
    return _ready(registry, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="200 when that version answers")
async def version_ready(name: str, version: str, registry: RegistryDep) -> JSONResponse:
    return _ready(registry, name, version)


@router.post("/models/{name}/infer", summary="Inference with the newest ready version")
async def infer(name: str, request: Request, pipeline: PipelineDep) -> Response:
    return await _infer(pipeline, request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference with one version")
async def infer_version(name: str, version: str, request: Request, pipeline: PipelineDep) -> Response:
    return await _infer(pipeline, request, name, version)


def _metadata(registry: ModelRegistry, name: str, version: str | None) -> JSONResponse:
    served = _held(registry, name, version)
    if isinstance(served, JSONResponse):
        return served
    if served.model is None:
        return _error(503, f"model '{name}' version {served.version} is {served.status.value}: {served.error or ''}")
    shape = list(served.model.card.input.spec().shape)
    return JSONResponse(
        {
            "name": name,
            "versions": [str(v) for v, s in registry.versions(name).items() if s.status is ModelStatus.READY],
            "platform": "tensorflow_savedmodel",
            "inputs": [
                {"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": ARRAY_INPUT, "datatype": "FP32", "shape": [-1, *shape]},
            ],
            "outputs": [
                {"name": output, "datatype": datatype, "shape": [-1, 2] if output == "probabilities" else [-1]}
                for output, datatype in OUTPUTS.items()
            ],
        }
    )


def _ready(registry: ModelRegistry, name: str, version: str | None) -> JSONResponse:
    served = _held(registry, name, version)
    if isinstance(served, JSONResponse):
        return served
    is_ready = served.status is ModelStatus.READY
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


async def _infer(pipeline: InferencePipeline, request: Request, name: str, version: str | None) -> Response:
    held = _held(pipeline.registry, name, version)
    if isinstance(held, JSONResponse):
        return held
    try:
        body, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
        (image,) = _one_input(read_inputs(body, binary))
        parameters = body.get("parameters") or {}
        threshold = parameters.get("threshold")
        if threshold is not None and not isinstance(threshold, int | float):
            raise TensorError("parameter 'threshold' must be a number from 0 to 1")
        requested = _requested_outputs(body)
        answers = await _screen(pipeline, name, held.version, image, threshold)
    except TensorError as error:
        return _error(400, str(error))
    except tuple(STATUS_OF) as error:  # type: ignore[misc]
        return protocol_error(error)
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
        requested[name] = bool((spec.get("parameters") or {}).get("binary_data", False))
    return requested


async def _screen(
    pipeline: InferencePipeline, name: str, version: int | None, image: Tensor, threshold: float | None
) -> list[Screening]:
    if image.datatype == "BYTES":
        outcomes = await pipeline.screen(
            name, [Upload(data) for data in image.value], threshold=threshold, version=version
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome  # one bad image fails the request, as in Triton
        return outcomes  # type: ignore[return-value]
    return await pipeline.screen_arrays(
        name, np.asarray(image.value, dtype=np.float32), threshold=threshold, version=version
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

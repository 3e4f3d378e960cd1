"""Every error leaves the service in one JSON shape: {"error": {"status", "code", "message"}}."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from app import request_context
from app.api.multipart import MalformedForm, NotMultipartRelated
from app.api.query import InvalidQuery
from app.api.schemas import ErrorBody, ErrorDetail, ProtocolError
from app.contract.image_errors import CorruptImage, ImageTooLarge, UnscorableImage, UnsupportedImage
from app.contract.savedmodel import ExplanationUnavailable
from app.runtime.errors import (
    BodyTooLarge,
    DecodeBusy,
    EmptyUpload,
    InvalidInput,
    InvalidPrevalence,
    InvalidThreshold,
    MissingImage,
    ModelUnavailable,
    Overloaded,
    PrevalenceUnavailable,
    TooManyImages,
    UnknownDisease,
    UnknownVersion,
)

log = logging.getLogger("medscan.errors")

# Domain error -> (HTTP status, code).
STATUS_OF: dict[type[Exception], tuple[int, str]] = {
    UnknownDisease: (404, "unknown_disease"),
    UnknownVersion: (404, "unknown_version"),
    ModelUnavailable: (503, "model_unavailable"),
    Overloaded: (503, "overloaded"),
    DecodeBusy: (503, "overloaded"),
    EmptyUpload: (422, "empty_file"),
    CorruptImage: (422, "corrupt_image"),
    UnscorableImage: (422, "unscorable_image"),
    UnsupportedImage: (415, "unsupported_media_type"),
    ImageTooLarge: (413, "image_too_large"),
    BodyTooLarge: (413, "body_too_large"),
    TooManyImages: (413, "too_many_images"),
    MissingImage: (422, "missing_image"),
    InvalidThreshold: (422, "invalid_threshold"),
    InvalidPrevalence: (422, "invalid_prevalence"),
    PrevalenceUnavailable: (409, "prevalence_unavailable"),
    InvalidInput: (422, "invalid_input"),
    ExplanationUnavailable: (409, "explanation_unavailable"),
    MalformedForm: (400, "malformed_form"),
    NotMultipartRelated: (415, "unsupported_media_type"),
    InvalidQuery: (422, "invalid_request"),  # the code FastAPI's own parameter validation answers with
}


def error_detail(error: Exception) -> ErrorDetail:
    """The error shape of one domain error, for an image's place in a multi-image answer."""
    status, code = STATUS_OF[type(error)]
    return ErrorDetail(status=status, code=code, message=str(error))


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(status=status, code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


# Where TF Serving's and KServe V2's routers (app/api/routes/) live: every answer under them, a path or method no
# route serves included, is in the protocol's error shape, which is what their clients parse.
TF_SERVING_PREFIX = "/v1/models"
V2_PREFIX = "/v2"


def under_protocol(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in (TF_SERVING_PREFIX, V2_PREFIX))


def protocol_message(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """TF Serving's and KServe V2's error shape: {"error": "<message>"}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def protocol_error(error: Exception) -> JSONResponse:
    """A domain error in the protocols' shape. They have no 413, 415 or 422: what the client sent wrong is 400
    there."""
    status, _ = STATUS_OF[type(error)]
    status = 400 if status in (413, 415, 422) else status
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    return protocol_message(status, str(error), headers)


# A protocol's own status and words for some errors (TF Serving's "Servable not found", V2's "unknown model").
ProtocolWords = dict[type[Exception], Callable[[Any], tuple[int, str]]]


def protocol_answer(error: Exception, words: ProtocolWords) -> JSONResponse:
    """An error as a protocol writes it: in its own words where it has them, else the domain error's."""
    for kind, say in words.items():
        if isinstance(error, kind):
            return protocol_message(*say(error))
    return protocol_error(error)


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI description of the error responses a route can give."""
    return {status: {"model": ErrorBody} for status in statuses}


def protocol_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI description of the error responses a TF Serving or V2 route can give, in the protocols' shape."""
    return {status: {"model": ProtocolError} for status in statuses}


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    status, code = STATUS_OF[type(error)]
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    return error_response(status, code, str(error), headers)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    message = "; ".join(problems) or "invalid request"
    if any(item.get("loc", ())[-1:] == ("file",) for item in error.errors()):
        message = "send the image as multipart/form-data in the field 'file' (" + message + ")"
    return error_response(422, "invalid_request", message)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(error.status_code, "http_error")
    headers = getattr(error, "headers", None)
    if error.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    if under_protocol(request.url.path):
        return protocol_message(error.status_code, str(error.detail), headers)
    return error_response(error.status_code, code, str(error.detail), headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method a route serves at the request's path, asked of the routes themselves. Starlette's 405 names
    the first such route's only: a path two routes serve (TF Serving's GET and POST /v1/models/...) claimed one."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Starlette answers this outside our request middleware, which would add the id: add it here, so that the
    # client can quote the id the log line carries.
    info = request_context.current()
    headers = {"X-Request-ID": info.request_id} if info is not None else None
    return error_response(500, "internal_error", "internal error; it has been logged", headers)


async def _client_gone(request: Request, error: Exception) -> Response:
    # The client went away (or the server's body timeout cut it off, answering 408 itself): nobody reads this.
    return Response(status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    for error_type in STATUS_OF:
        app.add_exception_handler(error_type, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)

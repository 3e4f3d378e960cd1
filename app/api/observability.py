"""ASGI middleware around every request: a request id (taken from X-Request-ID or made), echoed in the
response header and in every log line of the request; one access-log line; Prometheus counts and
latency per route template (never per raw path, which would grow without bound)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import request_context
from app.runtime.metrics import ServiceMetrics

log = logging.getLogger("medscan.access")
REQUEST_ID_HEADER = b"x-request-id"
VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, not logged
QUIET_ROUTES = ("/health", "/v2/health", "/metrics")  # probes and scrapes: logged at debug level


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == REQUEST_ID_HEADER and VALID_REQUEST_ID.match(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        info = request_context.begin(request_id)
        status = 500  # if the app fails before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_of(scope)
            version = "" if info.version is None else str(info.version)
            if self.metrics is not None:
                self.metrics.observe_request(
                    model=info.model or "", version=version, route=route, status=status, seconds=seconds
                )
            level = logging.DEBUG if route.startswith(QUIET_ROUTES) and status < 400 else logging.INFO
            log.log(
                level,
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "model": info.model,
                    "version": info.version,
                },
            )

"""ASGI middleware: once a stop was asked for, new requests get 503 `shutting_down` (liveness excepted),
with Connection: close, so clients and load balancers go elsewhere while in-flight requests finish."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.api.server import ShutdownGate

LIVENESS_PATHS = ("/health/live", "/v2/health/live")


class ShutdownMiddleware:
    def __init__(self, app: ASGIApp, gate: ShutdownGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.gate.draining and scope["path"] not in LIVENESS_PATHS:
            response = error_response(
                503,
                "shutting_down",
                "the service is shutting down; retry on another instance",
                {"Connection": "close", "Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

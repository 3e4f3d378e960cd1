"""Optional API keys, checked for every request before it reaches a route.

Keys come from MEDSCAN_API_KEYS and/or the file MEDSCAN_API_KEYS_FILE; with none, everything is open.
A key is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>` and compared in constant time
against every key. Open without a key: the web page and its files (they hold no data; the page asks
for a key when the API answers 401), the OpenAPI docs, and the probes and metrics unless
MEDSCAN_PROTECT_PROBES is set. Everything else, /admin/reload included, needs a key.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.settings import Settings

PAGE_PATHS = ("/", "/static/", "/docs", "/openapi.json", "/favicon.ico")
PROBE_PATHS = ("/health/", "/v2/health/", "/metrics")


class KeyFileError(Exception):
    """The API keys file cannot be read."""


def configured_keys(settings: Settings) -> list[bytes]:
    keys = [key.get_secret_value() for key in settings.api_keys]
    if settings.api_keys_file is not None:
        try:
            lines = Path(settings.api_keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as error:  # refuse to start open when keys were meant to be required
            raise KeyFileError(f"cannot read MEDSCAN_API_KEYS_FILE {settings.api_keys_file}: {error}") from error
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [key.encode("utf-8") for key in keys if key]


def presented_key(scope: Scope) -> bytes | None:
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"")
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip()
    return headers.get(b"x-api-key")


def is_open(path: str, protect_probes: bool) -> bool:
    if path == "/" or any(path.startswith(prefix) for prefix in PAGE_PATHS[1:]):
        return True
    return not protect_probes and (path == "/metrics" or path.startswith(PROBE_PATHS[:2]))


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: list[bytes], protect_probes: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.protect_probes = protect_probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or is_open(scope["path"], self.protect_probes):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        # compare with every key, so the time taken does not tell which one nearly matched
        matches = [hmac.compare_digest(key, known) for known in self.keys] if key else []
        if not any(matches):
            message = (
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                if key is None
                else "the API key is not valid"
            )
            response = error_response(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.body_limit import BodySizeLimitMiddleware

LIMIT = 1000


def make_app(seen: list[int]) -> BodySizeLimitMiddleware:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    return BodySizeLimitMiddleware(Starlette(routes=[Route("/", echo, methods=["POST"])]), max_bytes=LIMIT)


async def post(app, content) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post("/", content=content)


async def test_bodies_within_the_limit_pass_untouched() -> None:
    seen: list[int] = []
    response = await post(make_app(seen), b"x" * LIMIT)
    assert response.status_code == 200 and response.json() == {"bytes": LIMIT}


async def test_declared_length_over_the_limit_is_refused_unread() -> None:
    seen: list[int] = []
    response = await post(make_app(seen), b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert seen == []  # the app never saw the request


async def test_streamed_body_is_cut_off_at_the_limit() -> None:
    chunks_sent = 0

    async def chunks():
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"y" * 300

    seen: list[int] = []
    response = await post(make_app(seen), chunks())  # chunked: no Content-Length
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "the request body is larger than the limit of 1,000 bytes"
    assert seen == []
    assert chunks_sent < 10  # it stopped reading long before the 30 KB were sent

from __future__ import annotations

import anyio.to_thread
import pytest

from tests.images import gradient, image_bytes


def test_a_request_for_a_small_image_never_waits_for_a_worker_thread(client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dependencies, the route and a small image's decoding run on the event loop: FastAPI would send a plain
    `def` dependency to its thread pool, a hop per dependency per request (and a wait, when the pool is busy)."""
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(function, *args, **kwargs):
        hops.append(getattr(getattr(function, "func", function), "__name__", "?"))  # through functools.partial
        return await run_sync(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert client.get("/models/malaria").status_code == 200
    response = client.post("/predict/malaria", files={"file": ("x.png", image_bytes(gradient(60, 50)), "image/png")})
    assert response.status_code == 200, response.text
    assert hops == []
    # the counter does see a hop: a large image decodes in a worker thread
    large = image_bytes(gradient(600, 500))
    assert client.post("/predict/malaria", files={"file": ("x.png", large, "image/png")}).status_code == 200
    assert hops == ["decode_opened"]

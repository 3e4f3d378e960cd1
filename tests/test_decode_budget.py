"""The decode memory budget: estimates from headers, admission while they fit, 503 after a wait, 413 for an
image that could never fit; and through the service."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from app.contract.image_errors import ImageTooLarge
from app.runtime.decode_budget import WORKING_COPIES, DecodeBudget, decoded_bytes, memory_limit_bytes, reduced_size
from app.runtime.errors import DecodeBusy
from tests.images import image_bytes


def opened(image: Image.Image, fmt: str) -> Image.Image:
    import io

    return Image.open(io.BytesIO(image_bytes(image, fmt)))


def test_estimates_follow_the_header_and_jpegs_reduced_decoding():
    png = opened(Image.new("RGB", (1000, 800)), "PNG")
    assert decoded_bytes(png) == 1000 * 800 * 3 * WORKING_COPIES
    deep = opened(Image.fromarray(np.zeros((100, 100), np.uint16)), "PNG")
    assert decoded_bytes(deep) == 100 * 100 * 3 * 2 * WORKING_COPIES  # 16-bit samples, as RGB at least
    jpeg = opened(Image.new("RGB", (4000, 3000)), "JPEG")
    assert reduced_size(jpeg, 224) == (500, 375)  # 1/8: both sides stay >= 224
    assert reduced_size(jpeg, 448) == (1000, 750)  # 1/4
    assert decoded_bytes(jpeg, 448) == 1000 * 750 * 3 * WORKING_COPIES


def test_the_machine_or_cgroup_limit_is_read():
    assert 0 < memory_limit_bytes() <= 2**50


async def test_decodes_are_admitted_while_they_fit_and_wait_for_room():
    budget = DecodeBudget(limit_bytes=100, wait_s=2)
    order = []

    async def decode(name: str, size: int, hold: float):
        async with budget.reserve(size):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
        order.append(f"{name} out")

    await asyncio.gather(decode("a", 60, 0.2), decode("b", 60, 0.0), decode("c", 30, 0.0))
    assert order.index("a out") < order.index("b in")  # b waited for a's room; c fitted beside a at once
    assert order.index("c in") < order.index("a out")
    assert budget.in_use == 0


async def test_no_more_large_decodes_at_once_than_it_allows_though_memory_would_fit():
    budget = DecodeBudget(limit_bytes=1000, wait_s=2, max_decodes=1)
    at_once, most = 0, 0

    async def decode(hold: float):
        nonlocal at_once, most
        async with budget.reserve(10):
            at_once += 1
            most = max(most, at_once)
            await asyncio.sleep(hold)
            at_once -= 1

    await asyncio.gather(*(decode(0.02) for _ in range(5)))
    assert most == 1 and budget.decoding == 0 and budget.in_use == 0


def test_by_default_every_core_but_one_decodes() -> None:
    from app.runtime.decode_budget import default_decode_threads

    assert [default_decode_threads(cores) for cores in (1, 2, 8)] == [1, 1, 7]


async def test_a_full_budget_answers_busy_after_the_wait_and_too_large_at_once():
    budget = DecodeBudget(limit_bytes=100, wait_s=0.1)
    async with budget.reserve(90):
        with pytest.raises(DecodeBusy, match="retry after 1 s"):
            async with budget.reserve(20):
                pass
    with pytest.raises(ImageTooLarge, match="MEDSCAN_DECODE_MEMORY_MB"):
        async with budget.reserve(101):
            pass
    assert budget.in_use == 0


@pytest.mark.slow  # starts the app
def test_through_the_service_a_large_image_is_413_and_a_busy_budget_503(trust_models, monkeypatch):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    large = image_bytes(Image.new("RGB", (2000, 1000), (90, 90, 90)), "PNG")  # about 18 MB to decode
    settings = Settings(models_dir=trust_models, decode_memory_mb=10, decode_wait_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/predict/malaria", files={"file": ("large.png", large, "image/png")})
        assert response.status_code == 413 and "MiB" in response.json()["error"]["message"]
        small = image_bytes(Image.new("L", (300, 300), 90), "PNG")
        assert client.post("/predict/malaria", files={"file": ("s.png", small, "image/png")}).status_code == 200
        pipeline = client.app.state.pipeline
        pipeline.budget.in_use = pipeline.budget.limit_bytes  # as if others were decoding
        busy = client.post("/predict/malaria", files={"file": ("s.png", small, "image/png")})
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "overloaded"
        pipeline.budget.in_use = 0

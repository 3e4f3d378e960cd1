"""The image-count limits on every door: uploads, TF Serving's instances and KServe V2's tensors refuse more
images than a request may hold, or than the queue could ever admit, with the same message and never a 503
that no retry could get past: 413 too_many_images on our route, 400 on the protocols, which have no 413
(app/api/errors.py: protocol_error)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.images import gradient, image_bytes

SHAPE = (50, 50, 1)  # the trust models' malaria input


def arrays(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, *SHAPE), dtype=np.float32)


def tf_serving(client: TestClient, count: int):
    return client.post("/v1/models/malaria:predict", json={"instances": arrays(count).tolist()})


def kserve(client: TestClient, count: int):
    tensor = arrays(count)
    return client.post(
        "/v2/models/malaria/infer",
        json={
            "inputs": [
                {"name": "image", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}
            ]
        },
    )


def uploads(client: TestClient, count: int):
    files = [("file", (f"{i}.png", image_bytes(gradient(40, 40)), "image/png")) for i in range(count)]
    return client.post("/predict/malaria", files=files)


DOORS = {"predict": uploads, "tf_serving": tf_serving, "kserve_v2": kserve}
REFUSED = {"predict": 413, "tf_serving": 400, "kserve_v2": 400}


def assert_too_many(response, door: str, message: str) -> None:
    assert response.status_code == REFUSED[door], response.text
    assert message in response.text and "retry-after" not in response.headers
    if door == "predict":
        assert response.json()["error"]["code"] == "too_many_images"


@pytest.mark.parametrize("door", DOORS)
def test_the_per_request_limit_holds_on_every_door(trust_client, door: str) -> None:
    """trust_client allows 4 images a request."""
    assert DOORS[door](trust_client, 4).status_code == 200
    assert_too_many(DOORS[door](trust_client, 5), door, "5 images in one request; the limit is 4")


@pytest.fixture(scope="module")
def small_queue_client(trust_models):
    settings = Settings(models_dir=trust_models, max_batch_size=2, max_queue=3, max_images_per_request=8)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("door", DOORS)
def test_more_images_than_the_queue_can_ever_hold_is_413_not_a_retry(small_queue_client, door: str) -> None:
    assert DOORS[door](small_queue_client, 3).status_code == 200
    assert_too_many(DOORS[door](small_queue_client, 4), door, "4 images in one request; the limit is 3")


@pytest.fixture(scope="module")
def one_place_client(trust_models):
    settings = Settings(models_dir=trust_models, max_queue=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("door", DOORS)
def test_a_full_queue_is_503_with_retry_after_on_every_door(one_place_client, door: str) -> None:
    batcher = one_place_client.app.state.registry.models["malaria"].batcher
    held = batcher.admit()  # one request admitted and still decoding: the queue is at its bound
    try:
        response = DOORS[door](one_place_client, 1)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1" and "at capacity" in response.text
    finally:
        held.close()
    assert DOORS[door](one_place_client, 1).status_code == 200  # room again

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from PIL import Image

from app.api.schemas import Prediction
from app.contract.savedmodel import load_model
from app.contract.scoring import normalise
from app.main import create_app
from tests.images import blob, gradient, image_bytes, model_input


def post(client, disease: str, data: bytes, filename: str = "x.png", content_type: str = "image/png"):
    return client.post(f"/predict/{disease}", files={"file": (filename, data, content_type)})


def assert_error(response, status: int, code: str, *phrases: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status and body["error"]["code"] == code
    for phrase in phrases:
        assert phrase in body["error"]["message"]


def test_prediction_shape_and_values_match_the_model(client, served_models_dir) -> None:
    data = image_bytes(gradient(142, 131))
    response = post(client, "malaria", data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(Prediction.model_fields) and Prediction.model_validate(body).score == body["score"]
    assert body["disease"] == "malaria" and body["model_version"] == 1
    assert body["image"] == {"width": 142, "height": 131}
    assert body["intended_use"] == "research use only; not for diagnosis"
    assert set(body["probabilities"]) == {"infected", "uninfected"}
    assert sum(body["probabilities"].values()) == pytest.approx(100.0, abs=1e-9)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    # Same numbers as running the exported model directly on the shared preprocessing.
    model = load_model(served_models_dir / "malaria" / "1")
    x = model_input(data, model.card.input.spec(), max_pixels=10**8)[np.newaxis]
    expected = normalise(model.predict(x))[0]
    assert body["probabilities"]["infected"] == pytest.approx(expected[0] * 100, abs=0.006)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("JPEG", "RGB"), ("BMP", "RGB"), ("TIFF", "RGB"), ("GIF", "P"), ("PNG", "RGBA"), ("PNG", "L"), ("JPEG", "CMYK")],
)
def test_common_formats_and_modes_are_accepted_by_rgb_and_grayscale_models(client, fmt, mode) -> None:
    data = image_bytes(gradient(mode=mode), fmt)
    for disease in ("malaria", "retinopathy"):
        response = post(client, disease, data, content_type="application/octet-stream")
        assert response.status_code == 200, response.text


def test_unknown_disease_is_404_naming_the_known_ones(client) -> None:
    response = post(client, "cholera", image_bytes(gradient()))
    assert_error(response, 404, "unknown_disease", "'cholera'", "malaria", "retinopathy")


@pytest.mark.parametrize("name", ["..%2Fx", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "malaria%00"])
def test_path_like_disease_names_never_reach_the_file_system(client, name) -> None:
    response = client.post(f"/predict/{name}", files={"file": ("x.png", image_bytes(gradient()), "image/png")})
    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"unknown_disease", "not_found"}


def test_missing_file_field_is_422(client) -> None:
    response = client.post("/predict/malaria", files={"image": ("x.png", image_bytes(gradient()), "image/png")})
    assert_error(response, 422, "missing_image", "field 'file'")
    assert_error(client.post("/predict/malaria"), 422, "missing_image", "or as the raw body")


@pytest.mark.parametrize(
    ("body", "content_type", "phrase"),
    [
        (b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nx", "multipart/form-data; boundary=b", "ends"),
        (b"whatever", "multipart/form-data", "boundary"),
    ],
)
def test_a_malformed_form_is_400_saying_what_is_wrong(client, body: bytes, content_type: str, phrase: str) -> None:
    response = client.post("/predict/malaria", content=body, headers={"Content-Type": content_type})
    assert_error(response, 400, "malformed_form", phrase)


def test_empty_file_is_422(client) -> None:
    assert_error(post(client, "malaria", b""), 422, "empty_file", "empty")


def test_not_an_image_is_415(client) -> None:
    assert_error(
        post(client, "malaria", b"hello, I am text", "x.txt", "text/plain"),
        415,
        "unsupported_media_type",
        "not an image",
    )


def test_unsupported_image_format_is_415(client) -> None:
    assert_error(
        post(client, "malaria", image_bytes(gradient(), "WEBP"), "x.webp", "image/webp"),
        415,
        "unsupported_media_type",
        "WEBP",
    )


def test_truncated_image_is_422(client) -> None:
    data = image_bytes(gradient(300, 300), "JPEG")
    assert_error(
        post(client, "malaria", data[: len(data) // 3], "x.jpg", "image/jpeg"),
        422,
        "corrupt_image",
        "truncated or corrupt",
    )


def test_a_png_with_rows_missing_is_422(client) -> None:
    from tests.test_png_rows import grey_png

    assert_error(
        post(client, "malaria", grey_png(120, 120, rows_sent=40), "x.png", "image/png"),
        422,
        "corrupt_image",
        "before its last row",
    )


def test_image_over_the_pixel_limit_is_413_before_decoding(client) -> None:
    # 2100 x 2000 = 4.2 MP > the 4 MP test limit, but only a few KB as PNG.
    data = image_bytes(Image.new("L", (2100, 2000)), "PNG")
    assert len(data) < 100_000
    assert_error(post(client, "malaria", data), 413, "image_too_large", "4,200,000 pixels")


def test_body_over_the_limit_is_413(client) -> None:
    assert_error(post(client, "malaria", b"\xff" * (3 * 1024 * 1024)), 413, "body_too_large", "2,097,152 bytes")


def test_failed_model_is_503_and_the_others_still_serve(client) -> None:
    assert_error(post(client, "pneumonia", image_bytes(gradient())), 503, "model_unavailable", "failed")
    assert post(client, "malaria", image_bytes(gradient())).status_code == 200


async def test_50_concurrent_requests_answer_as_sequential_ones(service_settings) -> None:
    app = create_app(service_settings)
    images = [image_bytes(blob(40, infected=i % 2 == 0, seed=i)) for i in range(50)]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def one(data: bytes) -> dict:
                response = await client.post("/predict/malaria", files={"file": ("x.png", data, "image/png")})
                assert response.status_code == 200, response.text
                return response.json()["probabilities"]

            sequential = [await one(data) for data in images]
            concurrent = await asyncio.gather(*(one(data) for data in images))
        batcher = app.state.registry.models["malaria"].batcher
    assert concurrent == sequential
    assert batcher.batches_run < batcher.images_run  # some requests really were batched together


async def test_batching_off_gives_the_same_answers(service_settings) -> None:
    data = image_bytes(gradient(90, 60))
    answers = []
    for batching in (True, False):
        app = create_app(service_settings.model_copy(update={"batching": batching}))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                response = await client.post("/predict/retinopathy", files={"file": ("x.png", data, "image/png")})
                assert response.status_code == 200, response.text
                answers.append(response.json())
    assert 0 <= answers[0]["score"] <= 1 and answers[0]["label"] in {"infected", "uninfected"}
    assert answers[0] == answers[1]


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_small_images_decode_on_the_loop_large_ones_in_a_thread_with_the_same_answer(
    service_settings, monkeypatch
) -> None:
    from fastapi.testclient import TestClient

    from app.runtime import inference as route

    where: list[bool] = []
    real_decode = route.decode_opened
    monkeypatch.setattr(
        route,
        "decode_opened",
        lambda *args, **kwargs: (where.append(_on_event_loop()), real_decode(*args, **kwargs))[1],
    )
    small, large = image_bytes(gradient(60, 40)), image_bytes(gradient(400, 300))
    answers = {}
    for limit in (0, 60 * 40, 10**9):
        settings = service_settings.model_copy(update={"inline_decode_max_pixels": limit})
        with TestClient(create_app(settings)) as client:
            responses = [post(client, "malaria", data) for data in (small, large)]
            assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
            answers[limit] = [r.json() for r in responses]
            assert all(0 <= answer["score"] <= 1 for answer in answers[limit])
    # limit 0: both in a thread; 2,400: the small one on the loop; 10**9: both on the loop.
    assert where == [False, False, True, False, True, True]
    assert answers[0] == answers[60 * 40] == answers[10**9]


def test_a_full_queue_is_503_with_retry_after_before_the_image_is_even_decoded(service_settings) -> None:
    from fastapi.testclient import TestClient

    settings = service_settings.model_copy(update={"max_queue": 1})
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.registry.models["malaria"].batcher
        held = batcher.admit()  # one request admitted and still decoding: the queue is at its bound
        response = post(client, "malaria", image_bytes(gradient()))
        assert_error(response, 503, "overloaded", "malaria", "retry")
        assert response.headers["Retry-After"] == "1"
        # A corrupt image is refused as overloaded too: no work is spent before admission.
        assert_error(post(client, "malaria", b"\x89PNG\r\n\x1a\n broken"), 503, "overloaded")
        held.close()
        assert post(client, "malaria", image_bytes(gradient())).status_code == 200
        assert_error(post(client, "malaria", b"\x89PNG\r\n\x1a\n broken"), 415, "unsupported_media_type")


def test_a_raw_image_body_is_answered_like_the_same_image_in_a_form(client) -> None:
    data = image_bytes(gradient(90, 60))
    form = client.post("/predict/malaria", files={"file": ("x.png", data, "image/png")})
    raw = client.post("/predict/malaria", content=data, headers={"Content-Type": "image/png"})
    assert form.status_code == raw.status_code == 200, raw.text
    assert raw.json()["score"] == form.json()["score"] and raw.json()["image"] == {"width": 90, "height": 60}
    jpeg = client.post(
        "/predict/malaria?threshold=0.5",
        content=image_bytes(gradient(90, 60), "JPEG"),
        headers={"Content-Type": "image/jpeg"},
    )
    assert jpeg.status_code == 200 and jpeg.json()["threshold"] == 0.5


def test_bodies_spooled_to_disk_are_answered_like_bodies_in_memory(client, service_settings) -> None:
    """With no memory for the spool every body goes to its temporary file: the answers stay the same."""
    from fastapi.testclient import TestClient

    images = [image_bytes(gradient(400, 300)), image_bytes(blob(64, True, 3))]
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    on_disk = create_app(service_settings.model_copy(update={"spool_memory_bytes": 0}))
    with TestClient(on_disk) as spooling:
        spooled_form = spooling.post("/predict/malaria", files=files).json()["results"]
        spooled_raw = spooling.post("/predict/malaria", content=images[0], headers={"Content-Type": "image/png"})
    in_memory = client.post("/predict/malaria", files=files).json()["results"]
    assert [r["score"] for r in spooled_form] == [r["score"] for r in in_memory]
    assert spooled_raw.status_code == 200 and spooled_raw.json()["score"] == in_memory[0]["score"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"", "image/png", 422, "empty_file"),
        (b"not an image", "image/png", 415, "unsupported_media_type"),
        (b'{"file": 1}', "application/json", 422, "missing_image"),
        (b"", None, 422, "missing_image"),
    ],
)
def test_a_bad_raw_body_or_none_at_all_is_a_clear_4xx(
    client, content: bytes, content_type, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict/malaria", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code

"""The service's modality check: it alone says "wrong kind of image" where it runs; each model's own feature
distance then says only "unlike the training sites"."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.contract.modality import MODALITY_DIR, SIDE, modality_pixels
from app.contract.preprocessing import kind_input
from tests.images import image_bytes

pytestmark = pytest.mark.slow  # exports models and starts the app


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    return image_bytes(Image.new("RGB", size, colour), "PNG")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.model_fixtures import export_modality_check, export_untrained

    folder = tmp_path_factory.mktemp("modality-models")
    # Every image beyond the malaria model's own distance threshold: only the check can call it the right kind.
    export_untrained(folder, "malaria", colour_mode="rgb", size=48, ood_threshold=0.0, modality="blood_smear_cell")
    export_untrained(folder, "pneumonia", size=48, ood_threshold=1e6)  # a card without a modality
    export_modality_check(folder)
    return folder


def client_for(models: Path, **settings) -> TestClient:
    from app.main import create_app
    from app.settings import Settings

    return TestClient(create_app(Settings(models_dir=models, **settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(models: Path):
    with client_for(models) as test_client:
        yield test_client


def predict(client: TestClient, disease: str, data: bytes) -> dict:
    response = client.post(f"/predict/{disease}", files={"file": ("image.png", data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_right_kind_beyond_the_models_distance_is_another_site_not_another_organ(client):
    answer = predict(client, "malaria", png((200, 60, 40)))
    assert answer["modality"]["kind"] == "blood_smear_cell" and answer["modality"]["wrong_kind"] is False
    assert answer["modality"]["probability"] > 0.9
    assert answer["in_distribution"] is True
    assert answer["out_of_distribution"]["unlike_training_sites"] is True
    assert "unlike most images of the sites" in answer["warning"]


def test_the_wrong_kind_is_said_in_words(client):
    answer = predict(client, "malaria", png((40, 60, 200)))
    assert answer["modality"] == {
        "kind": "other",
        "expected": "blood_smear_cell",
        "probability": pytest.approx(0.0, abs=1e-3),
        "minimum": 0.5,
        "wrong_kind": True,
    }
    assert answer["in_distribution"] is False
    assert answer["out_of_distribution"]["unlike_training_sites"] is None
    assert (
        "looks like something other than the medical images MedScan knows, not a blood-smear cell" in answer["warning"]
    )


def test_a_model_without_a_modality_keeps_its_distance_check(client):
    answer = predict(client, "pneumonia", png((90, 90, 90)))
    assert answer["modality"] is None and answer["in_distribution"] is True


def test_several_images_each_get_their_own_kind(client):
    files = [
        ("file", (f"{i}.png", data, "image/png")) for i, data in enumerate([png((40, 60, 200)), png((200, 60, 40))])
    ]
    results = client.post("/predict/malaria", files=files).json()["results"]
    assert [r["modality"]["wrong_kind"] for r in results] == [True, False]


def test_switched_off_the_models_distance_decides_again(models):
    with client_for(models, modality_check=False) as test_client:
        answer = predict(test_client, "malaria", png((200, 60, 40)))
    assert answer["modality"] is None and answer["in_distribution"] is False


def test_a_broken_check_leaves_the_service_up_on_the_distances(models, tmp_path):
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    broken = copy / MODALITY_DIR / "2"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    with client_for(copy) as test_client:
        answer = predict(test_client, "malaria", png((200, 60, 40)))
        assert answer["modality"] is None and answer["in_distribution"] is False
        assert test_client.get("/health/ready").status_code == 200


def test_the_check_sees_the_whole_image_aspect_kept():
    wide = Image.new("RGB", (300, 100), (255, 255, 255))
    pixels = modality_pixels(wide)
    assert pixels.shape == (SIDE, SIDE, 3)
    rows = np.flatnonzero(pixels[:, SIDE // 2, 0] > 128)
    assert abs(len(rows) - SIDE // 3) <= 2 and rows[0] > 60  # a band in the middle, black above and below


def test_sixteen_bit_and_transparent_images_reach_the_check_as_rgb():
    deep = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    assert kind_input(deep).shape == (SIDE, SIDE, 3) and kind_input(deep).max() > 200
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert kind_input(clear).max() == 0  # transparent is black, as for the models
    assert Image.open(io.BytesIO(png((1, 2, 3)))).mode == "RGB"


def test_the_model_list_carries_the_checks_card(client):
    body = client.get("/models").json()
    check = body["modality_check"]
    assert check["version"] == 1 and check["classes"][-1] == "other" and check["minimum_probability"] == 0.5
    cards = {model["disease"]: model["card"] for model in body["models"]}
    assert cards["malaria"]["modality"] == "blood_smear_cell" and cards["pneumonia"]["modality"] is None


def test_many_images_are_checked_a_chunk_at_a_time_with_the_same_answers(models, monkeypatch):
    from app.runtime import modality_check

    check = modality_check.load_modality_check(models)
    pixels = np.random.default_rng(0).integers(0, 256, (modality_check.CHUNK * 2 + 3, SIDE, SIDE, 3), np.uint8)
    calls: list[int] = []
    call = check._call
    monkeypatch.setattr(check, "_call", lambda chunk: calls.append(len(chunk)) or call(chunk))
    together = check.probabilities(pixels)
    assert calls == [modality_check.CHUNK, modality_check.CHUNK, 3]  # memory bounded by a chunk, not the call
    one_by_one = np.concatenate([call(pixels[index : index + 1]) for index in range(len(pixels))])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert check.probabilities(pixels[:0]).shape == (0, len(check.card.classes))

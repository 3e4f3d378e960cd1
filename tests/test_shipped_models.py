"""The models committed under models/: they load, and on real images they still score what their cards say (their
trust layer: tests/test_shipped_trust.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.contract.model_store import latest_version, version_dir
from app.contract.savedmodel import load_model
from app.main import create_app
from app.settings import Settings
from tests.conftest import REPO_MODELS, SHARED_DATASETS, needs_shared_data
from tests.shipped import SHIPPED, shipped_card
from training.data.config import DISEASES
from training.evaluation.metrics import compute_metrics
from training.evaluation.run import predict_test_part

SAMPLE = 1000  # a fixed sample of each test part (all of it where smaller)


def test_every_disease_has_a_shipped_model() -> None:
    assert SHIPPED == sorted(DISEASES)


@pytest.mark.parametrize("disease", SHIPPED)
def test_shipped_model_loads_and_fits_the_size_budget(disease: str) -> None:
    folder = version_dir(REPO_MODELS, disease, latest_version(REPO_MODELS, disease))
    model = load_model(folder)
    assert model.card.disease == disease
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 20 * 1024 * 1024, f"{folder} is {size / 2**20:.1f} MB"


def test_all_shipped_models_fit_the_total_budget() -> None:
    """The brief's budget: all models, the modality check included, <= 100 MB."""
    size = sum(f.stat().st_size for f in REPO_MODELS.rglob("*") if f.is_file())
    assert size <= 100 * 1024 * 1024, f"{size / 2**20:.1f} MB"


@needs_shared_data
@pytest.mark.parametrize("disease", SHIPPED)
def test_shipped_model_scores_its_card_accuracy_on_its_test_part(disease: str) -> None:
    labels, probabilities = predict_test_part(disease, data_dir=SHARED_DATASETS, models_dir=REPO_MODELS, limit=SAMPLE)
    card = shipped_card(disease)
    measured = compute_metrics(labels, probabilities)
    assert abs(measured.accuracy - card.metrics.accuracy) <= 0.02, (
        f"{disease}: {measured.accuracy:.4f} on {len(labels)} test images vs card {card.metrics.accuracy:.4f}"
    )


@needs_shared_data
def test_the_service_answers_a_real_image_with_each_shipped_model() -> None:
    with TestClient(create_app(Settings(models_dir=REPO_MODELS))) as client:
        for disease in SHIPPED:
            folder = DISEASES[disease].images_folder  # referable_retinopathy reads the retinopathy images
            image = sorted((SHARED_DATASETS / folder / "infected").iterdir())[0]
            response = client.post(f"/predict/{disease}", files={"file": (image.name, image.read_bytes())})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["disease"] == disease and body["label"] in {"infected", "uninfected"}
            assert sum(body["probabilities"].values()) == pytest.approx(100.0)

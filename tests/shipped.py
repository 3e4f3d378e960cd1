"""The models committed under models/, as the tests of them read them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from app.contract.model_card import ModelCard, read_card
from app.contract.model_store import METADATA_FILE, disease_names, latest_version_dir
from app.contract.preprocessing import file_pixels
from app.contract.savedmodel import LoadedModel, load_model
from tests.conftest import REPO_MODELS, SHARED_DATASETS
from training.data.samples import fixed_sample
from training.evaluation.answers import AnswerSet, answers_path, read_answers
from training.evaluation.assessment import run_model

SHIPPED = disease_names(REPO_MODELS)
# Log-odds and distances answered now against those kept: float noise of another CPU or batch only. A model
# changed in any way (another weight, threshold, preprocessing or decoder) answers far outside it.
ANSWER_TOLERANCE = 1e-3


def shipped_folder(disease: str) -> Path:
    return latest_version_dir(REPO_MODELS, disease)


def shipped_card(disease: str) -> ModelCard:
    """The latest shipped version's card, read as the service reads it (loading the network adds nothing here)."""
    return read_card(shipped_folder(disease) / METADATA_FILE)


@cache
def shipped_answers(disease: str) -> dict[str, AnswerSet]:
    """Every answer the latest shipped version's card figures were measured on."""
    return read_answers(answers_path(shipped_folder(disease)))


def every_kth(count: int, sample: int) -> np.ndarray:
    """The indices of a fixed sample of a set of `count`, spread over it."""
    return np.array(fixed_sample(list(range(count)), sample))


def assert_answers_again(model: LoadedModel, kept: AnswerSet, indices: np.ndarray, what: str) -> None:
    """The model, answering the kept images at `indices` now (read from ../shared as the service reads an
    upload), gives the answers its card was measured on."""
    spec = model.card.input.spec()
    pixels = np.stack([file_pixels(SHARED_DATASETS / kept.images[index], spec) for index in indices])
    now = run_model(model, pixels)
    np.testing.assert_allclose(now.log_odds, kept.log_odds[indices], atol=ANSWER_TOLERANCE, err_msg=what)
    if kept.ood_distance is not None:
        assert now.ood_distance is not None, what
        np.testing.assert_allclose(
            now.ood_distance, kept.ood_distance[indices], rtol=ANSWER_TOLERANCE, atol=ANSWER_TOLERANCE, err_msg=what
        )


def load_shipped(disease: str) -> LoadedModel:
    return load_model(shipped_folder(disease))

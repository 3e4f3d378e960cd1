"""The models committed under models/, as the tests of them read them."""

from __future__ import annotations

from app.contract.model_card import ModelCard, read_card
from app.contract.model_store import METADATA_FILE, disease_names, latest_version, version_dir
from tests.conftest import REPO_MODELS

SHIPPED = disease_names(REPO_MODELS)


def shipped_card(disease: str) -> ModelCard:
    """The latest shipped version's card, read as the service reads it (loading the network adds nothing here)."""
    return read_card(version_dir(REPO_MODELS, disease, latest_version(REPO_MODELS, disease)) / METADATA_FILE)

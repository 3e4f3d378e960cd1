"""Evaluating an exported version as the service runs it, on its card's test part."""

from __future__ import annotations

import numpy as np

from pathlib import Path

from app.model_card import TestMetrics
from app.model_store import latest_version, version_dir, versions
from app.savedmodel import load_model
from app.scoring import normalise
from training.config import get_disease
from training.data import DataError, find_samples, split_by_group
from training.evaluate import compute_metrics
from training.pipeline import decode_samples, images_only


def predict_test_part(
    disease: str, *, data_dir: Path, models_dir: Path, version: int | None = None, limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, normalised probabilities) of the exported model on its test part, or a fixed sample of it."""
    get_disease(disease)
    version = version or latest_version(models_dir, disease)
    if version is None or version not in versions(models_dir, disease):
        found = ", ".join(map(str, versions(models_dir, disease))) or "none"
        raise DataError(f"no version {version or ''} of {disease} under {models_dir} (versions: {found})")
    model = load_model(version_dir(models_dir, disease, version))
    samples = find_samples(data_dir, disease)
    test = split_by_group(samples, seed=model.card.training.seed).test
    if limit is not None and limit < len(test):
        # A fixed, class-stratified sample: every k-th file of the (sorted) test part.
        test = test[:: max(1, len(test) // limit)][:limit]
    decoded = decode_samples(test, model.card.input.spec())
    batches = images_only(decoded, batch_size=128)
    scores = np.concatenate([model.predict(batch.numpy()) for batch in batches])
    return decoded.labels, normalise(scores)


def evaluate_version(disease: str, *, data_dir: Path, models_dir: Path, version: int | None = None) -> TestMetrics:
    labels, probabilities = predict_test_part(disease, data_dir=data_dir, models_dir=models_dir, version=version)
    return compute_metrics(labels, probabilities)

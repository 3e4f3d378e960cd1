"""Evaluating an exported version as the service runs it, on its card's test part."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.contract.model_card import ModelCard, replace_card
from app.contract.model_store import METADATA_FILE
from app.contract.savedmodel import LoadedModel, load_model
from app.contract.scoring import normalise
from training.data.config import describe_disease, disease_samples, other_diseases, samples_of
from training.data.pipeline import decode_samples, images_only, kept_samples, pixels_of
from training.data.samples import DataError, Sample, card_split_spec, split_as
from training.data.versions import published_version
from training.evaluation.answers import image_names
from training.evaluation.assessment import (
    PROBE_LIMIT,
    assess,
    batch_for,
    probe_sets,
    run_model,
    with_assessment,
    write_assessment_report,
)
from training.evaluation.generalisation import breakdowns


def load_version(disease: str, models_dir: Path, version: int | None) -> LoadedModel:
    if not (models_dir / disease).is_dir():
        raise DataError(f"unknown disease {disease!r}: no folder {models_dir / disease}")
    return load_model(published_version(models_dir, disease, version))


def test_part(model: LoadedModel, data_dir: Path) -> list[Sample]:
    return split_as(disease_samples(data_dir, model.card.disease), card_split_spec(model.card)).test


def predict_test_part(
    disease: str,
    *,
    data_dir: Path,
    models_dir: Path,
    version: int | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, normalised probabilities) of the exported model on its test part, or a fixed sample of it."""
    model = load_version(disease, models_dir, version)
    test = test_part(model, data_dir)
    if limit is not None and limit < len(test):
        # A fixed, class-stratified sample: every k-th file of the (sorted) test part.
        test = test[:: max(1, len(test) // limit)][:limit]
    decoded = decode_samples(test, model.card.input.spec())
    batches = images_only(decoded, batch_size=batch_for(model.card))
    scores = np.concatenate([model.predict(batch.numpy()) for batch in batches])
    return decoded.labels, normalise(scores)


def evaluate_version(
    disease: str,
    *,
    data_dir: Path,
    models_dir: Path,
    version: int | None = None,
    write: bool = False,
    probe_limit: int = PROBE_LIMIT,
) -> ModelCard:
    """Re-measure a version on its test part (metrics with intervals, calibration, screening threshold,
    out-of-distribution flags, per-site and per-grade figures) and keep its validation part's distances for
    the site-shift signal; with `write`, replace its card's figures and report in place."""
    model = load_version(disease, models_dir, version)
    config = describe_disease(model.card.disease, data_dir)
    spec = model.card.input.spec()
    split = split_as(samples_of(config, data_dir), card_split_spec(model.card))
    decoded = decode_samples(split.test, spec)
    test = kept_samples(split.test, decoded)
    probes = probe_sets(data_dir, disease, spec, known=other_diseases(config), limit=probe_limit)
    assessment = assess(
        model, pixels_of(decoded), decoded.labels, [s.group for s in test], probes, image_names(test, data_dir)
    )
    validation = run_model(model, pixels_of(decode_samples(split.validation, spec)))
    card = with_assessment(model.card, assessment)
    card = card.model_copy(
        update=breakdowns(
            card,
            config,
            data_dir,
            test,
            assessment.labels,
            assessment.uncalibrated,
            assessment.calibrated,
            validation.ood_distance,
        )
    )
    if write:
        write_assessment_report(model.path, card, assessment, history=None)
        replace_card(card, model.path / METADATA_FILE)
    return card

"""Evaluating an exported version as the service runs it, on its card's test part."""

from __future__ import annotations

from pathlib import Path

from app.contract.model_card import ModelCard, replace_card
from app.contract.model_store import METADATA_FILE
from app.contract.savedmodel import LoadedModel, load_model
from training.data.config import describe_disease, disease_samples, other_diseases, samples_of
from training.data.pipeline import decode_samples, kept_samples, pixels_of
from training.data.samples import DataError, Sample, card_split_spec, split_as
from training.data.versions import published_version
from training.evaluation.answers import image_names
from training.evaluation.assessment import (
    PROBE_LIMIT,
    assess,
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

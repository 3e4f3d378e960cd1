"""Measuring a version: calibration error, Brier score, grouped intervals, the images OOD must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, InputSpec
from training.evaluation.assessment import (
    PHOTOGRAPHS,
    brier_score,
    expected_calibration_error,
    group_intervals,
    noise_and_blank,
    photographs,
)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_it_does_not() -> None:
    # 80% confident in `infected`, right 4 times in 5: perfectly calibrated.
    labels = np.array([0, 0, 0, 0, 1] * 20)
    assert expected_calibration_error(np.full(100, 0.8), labels) == pytest.approx(0.0)
    # 99% confident, right 4 times in 5: 0.19 off.
    assert expected_calibration_error(np.full(100, 0.99), labels) == pytest.approx(0.19)


def test_brier_score_is_the_mean_squared_error_of_the_probability() -> None:
    assert brier_score(np.array([1.0, 0.0, 0.5]), np.array([0, 1, 0])) == pytest.approx(0.25 / 3)


def test_group_intervals_contain_the_estimate_and_widen_with_fewer_patients() -> None:
    from training.evaluation.metrics import compute_metrics, probabilities_of

    rng = np.random.default_rng(0)
    labels = np.arange(400) % 2
    positive = np.clip(np.where(labels == 0, rng.normal(0.7, 0.2, 400), rng.normal(0.3, 0.2, 400)), 0, 1)
    probabilities = probabilities_of(positive)
    accuracy = compute_metrics(labels, probabilities).accuracy
    many = group_intervals(labels, probabilities, [f"p{i}" for i in range(400)], resamples=300)
    few = group_intervals(labels, probabilities, [f"p{i % 8}" for i in range(400)], resamples=300)
    assert many["accuracy"][0] <= accuracy <= many["accuracy"][1]
    assert few["accuracy"][1] - few["accuracy"][0] >= many["accuracy"][1] - many["accuracy"][0]


@pytest.mark.parametrize("colour_mode", [ColourMode.GRAYSCALE, ColourMode.RGB])
def test_probe_images_come_prepared_at_the_model_input(colour_mode: ColourMode) -> None:
    spec = InputSpec(height=40, width=30, colour_mode=colour_mode)
    photos, noise = photographs(spec), noise_and_blank(spec)
    assert photos.pixels.shape == (len(PHOTOGRAPHS), *spec.shape) and photos.pixels.dtype == np.uint8
    assert noise.pixels.shape[1:] == spec.shape and len(noise.pixels) >= 10
    assert {0, 255} <= {int(image.max()) for image in noise.pixels} | {int(image.min()) for image in noise.pixels}
    # A gray-modality model's service flags colour pictures before any distance; a colour model's does not.
    colour_photos = {name for name, colour in zip(PHOTOGRAPHS, photos.colour_picture, strict=True) if colour}
    if colour_mode is ColourMode.GRAYSCALE:
        assert {"astronaut", "coffee", "rocket"} <= colour_photos and not {"camera", "moon", "page"} & colour_photos
        assert noise.colour_picture.sum() == 6  # 4 colour noise images, flat red and flat blue
    else:
        assert not colour_photos and not noise.colour_picture.any()


def test_other_diseases_colour_files_are_counted_as_the_service_flags_them(tmp_path: Path) -> None:
    from tests.conftest import write_synthetic_dataset
    from tests.images import gradient
    from training.evaluation.assessment import probe_sets

    data = write_synthetic_dataset(tmp_path / "data", "retinopathy", manifest=False)
    for path in (data / "retinopathy").rglob("*.png"):
        gradient(90, 60).save(path)  # colour photographs
    write_synthetic_dataset(data, "brain_tumor", manifest=False)  # gray scans

    gray = probe_sets(data, "pneumonia", InputSpec(40, 40, ColourMode.GRAYSCALE), known=["retinopathy", "brain_tumor"])
    colour = probe_sets(data, "pneumonia", InputSpec(40, 40, ColourMode.RGB), known=["retinopathy", "brain_tumor"])

    assert gray["retinopathy test part"].colour_picture.all() and len(gray["retinopathy test part"].pixels) > 0
    assert not gray["brain_tumor test part"].colour_picture.any()
    assert not any(probe.colour_picture.any() for probe in colour.values())


def test_a_large_model_under_flips_is_measured_in_batches_the_service_would_run() -> None:
    from tests.model_fixtures import fixture_card
    from training.evaluation.assessment import BATCH, MAX_BATCH_PIXELS, batch_for

    small = fixture_card("malaria", 1, InputSpec(96, 96, ColourMode.RGB))
    large = fixture_card("referable_retinopathy", 1, InputSpec(448, 448, ColourMode.RGB))
    assert batch_for(small) == BATCH
    assert batch_for(large) == MAX_BATCH_PIXELS // (448 * 448)
    flipped = large.model_copy(update={"test_time_flips": ["horizontal", "vertical"]})
    assert batch_for(flipped) == MAX_BATCH_PIXELS // (448 * 448 * 4) == 5  # every view counts

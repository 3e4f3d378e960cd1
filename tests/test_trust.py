"""Fitting the trust layer: temperature, its held-out check, screening threshold, out-of-distribution Gaussian."""

from __future__ import annotations

import numpy as np
import pytest

from app.scoring import calibrated_probability
from training.trust import choose_temperature, fit_ood, fit_temperature, operating_point, screening_threshold


def overconfident(count: int = 4000, true_temperature: float = 2.5, seed: int = 0):
    """Labels drawn from sigmoid(z), reported log-odds z * true_temperature: a model too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, count)
    labels = np.where(rng.random(count) < 1 / (1 + np.exp(-z)), 0, 1)  # 0 = infected
    return z * true_temperature, labels


def test_fit_temperature_recovers_how_overconfident_a_model_is() -> None:
    log_odds, labels = overconfident()
    assert fit_temperature(log_odds, labels) == pytest.approx(2.5, rel=0.1)


def test_scaling_is_kept_when_it_helps_held_out_patients_and_dropped_when_it_does_not() -> None:
    log_odds, labels = overconfident()
    groups = [f"p{i // 10}" for i in range(len(labels))]
    temperature, verdict = choose_temperature(log_odds, labels, groups)
    assert temperature == pytest.approx(2.5, rel=0.1) and "kept" in verdict
    calibrated, labels = overconfident(true_temperature=1.0)
    temperature, verdict = choose_temperature(calibrated, labels, groups)
    assert "held-out ECE" in verdict
    assert temperature == 1.0 or temperature == pytest.approx(1.0, abs=0.1)


def test_the_screening_threshold_reaches_the_target_sensitivity_and_no_lower_threshold_is_needed() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0] * 200 + [1] * 300)
    probabilities = np.clip(np.where(labels == 0, rng.normal(0.7, 0.2, 500), rng.normal(0.3, 0.2, 500)), 0, 1)
    threshold = screening_threshold(probabilities, labels, 0.95)
    point = operating_point(probabilities, labels, threshold)
    assert point.sensitivity >= 0.95
    assert operating_point(probabilities, labels, np.nextafter(threshold, 1)).sensitivity < 0.95


def test_the_gaussian_tells_shifted_features_from_the_training_ones() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(0, 1, (600, 20))
    labels = np.arange(600) % 2
    train[labels == 0, 0] += 3  # two classes apart along one feature
    statistics = fit_ood(train, labels)
    held_out = rng.normal(0, 1, (200, 20))
    held_out[:100, 0] += 3
    shifted = rng.normal(0, 1, (200, 20)) + np.r_[0, 0, np.full(5, 3.0), np.zeros(13)]  # another modality
    threshold = np.quantile(statistics.distances(held_out), 0.975)
    assert np.mean(statistics.distances(shifted) > threshold) > 0.95
    assert np.mean(statistics.distances(held_out) > threshold) <= 0.03


def test_temperature_one_changes_nothing() -> None:
    log_odds = np.linspace(-5, 5, 11)
    np.testing.assert_allclose(calibrated_probability(log_odds, 1.0), 1 / (1 + np.exp(-log_odds)))

"""Fitting the trust layer: calibration and its held-out choice, screening threshold, OOD Gaussian."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract.scoring import calibrated_probability
from training.evaluation.metrics import expected_calibration_error, operating_point
from training.release.trust import choose_calibration, fit_ood, fit_platt, fit_temperature, screening_threshold


def overconfident(count: int = 4000, true_temperature: float = 2.5, seed: int = 0, shift: float = 0.0):
    """Labels drawn from sigmoid(z), reported log-odds z * true_temperature - shift: a model too sure of itself
    and, with a shift, one that answers as if the infected were more common (or rarer) than they are."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, count)
    labels = np.where(rng.random(count) < 1 / (1 + np.exp(-z)), 0, 1)  # 0 = infected
    return z * true_temperature - shift, labels


def patients(count: int) -> list[str]:
    return [f"p{i // 10}" for i in range(count)]


def test_fit_temperature_recovers_how_overconfident_a_model_is() -> None:
    log_odds, labels = overconfident()
    assert fit_temperature(log_odds, labels) == pytest.approx(2.5, rel=0.1)


def test_fit_platt_recovers_both_the_overconfidence_and_the_shifted_prior() -> None:
    log_odds, labels = overconfident(true_temperature=2.5, shift=-2.0)  # answers as if infected were commoner
    temperature, bias = fit_platt(log_odds, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    assert bias == pytest.approx(-2.0 / 2.5, abs=0.1)  # sigmoid(x / T + b) undoes x = T z + 2


def test_a_shifted_prior_is_corrected_by_platt_scaling_where_temperature_cannot() -> None:
    """A model trained with its classes weighed alike, served where a quarter of the images are infected."""
    log_odds, labels = overconfident(true_temperature=1.0, shift=-1.5)
    choice = choose_calibration(log_odds, labels, patients(len(labels)))
    assert choice.method == "platt" and choice.bias == pytest.approx(-1.5, abs=0.15)
    assert choice.selection.endswith("platt used")
    calibrated = calibrated_probability(log_odds, *choice.parameters)
    assert (
        expected_calibration_error(calibrated, labels)
        < 0.02
        < expected_calibration_error(calibrated_probability(log_odds, fit_temperature(log_odds, labels)), labels)
    )


def test_temperature_scaling_is_kept_when_it_helps_held_out_patients() -> None:
    log_odds, labels = overconfident()
    choice = choose_calibration(log_odds, labels, patients(len(labels)), methods=("none", "temperature"))
    assert choice.method == "temperature" and choice.temperature == pytest.approx(2.5, rel=0.1)
    assert choice.bias == 0.0 and choice.selection.endswith("temperature used")


def test_calibration_is_dropped_when_it_hurts_held_out_patients() -> None:
    """Calibrated answers but for a few confidently wrong ones: the likelihood fit softens everything to pay for
    those few, which worsens the calibration error of the rest on held-out patients, so it is not used."""
    log_odds, labels = overconfident(count=2000, true_temperature=1.0, seed=3)
    wrong = np.arange(0, 2000, 50)  # 2% answered with log-odds 40 and the other label
    log_odds[wrong], labels[wrong] = 40.0, 1
    assert fit_temperature(log_odds, labels) > 1.5  # what scaling would have used
    choice = choose_calibration(log_odds, labels, patients(len(labels)))
    assert choice.method == "none" and choice.parameters == (1.0, 0.0)
    assert "none" in choice.selection and choice.selection.endswith("none used")


def test_a_gain_within_noise_does_not_buy_a_method_more_parameters() -> None:
    """Well calibrated already: each fit gains at most a hair on held-out patients, so none is used."""
    log_odds, labels = overconfident(count=3000, true_temperature=1.0, seed=7)  # temperature gains 6%
    choice = choose_calibration(log_odds, labels, patients(len(labels)))
    assert choice.method == "none", choice.selection


def test_too_few_groups_to_check_keeps_the_fitted_temperature_and_says_so() -> None:
    log_odds, labels = overconfident(count=400)
    choice = choose_calibration(log_odds, labels, ["one patient"] * len(labels))
    assert choice.temperature == pytest.approx(fit_temperature(log_odds, labels)) and choice.bias == 0.0
    assert "too few groups" in choice.selection


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


def reference_distances(train: np.ndarray, labels: np.ndarray, probe: np.ndarray, kept: int) -> np.ndarray:
    """The definition, slowly: the full Ledoit-Wolf covariance of standardised residuals, decomposed; its `kept`
    largest directions whitened and the rest's mean variance for what lies outside them."""
    from sklearn.covariance import LedoitWolf

    center, scale = train.mean(axis=0), train.std(axis=0) + 1e-6
    standard, probe = (train - center) / scale, (probe - center) / scale
    means = np.stack([standard[labels == c].mean(axis=0) for c in (0, 1)])
    eigenvalues, eigenvectors = np.linalg.eigh(LedoitWolf().fit(standard - means[labels]).covariance_)
    order = np.argsort(eigenvalues)[::-1]
    variances, directions, rest = eigenvalues[order[:kept]], eigenvectors[:, order[:kept]], eigenvalues[order[kept:]]
    offsets = probe[:, None, :] - means[None]
    along = offsets @ directions
    outside = (offsets**2).sum(axis=-1) - (along**2).sum(axis=-1)
    squared = (along**2 / variances).sum(axis=-1) + (outside / rest.mean() if rest.size else 0.0)
    return np.sqrt(squared.min(axis=1))


@pytest.mark.parametrize(
    ("samples", "width", "kept"),
    [(40, 1500, 1500), (900, 700, 640)],  # fewer images than features (S of rank 39: exact), and more
    ids=["wide", "tall"],
)
def test_the_many_features_distance_is_the_ledoit_wolf_one_without_the_full_decomposition(
    samples: int, width: int, kept: int
) -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(samples, width)) * np.linspace(3, 0.5, width)
    labels = np.arange(samples) % 2
    train[labels == 0, :5] += 2
    probe = rng.normal(size=(50, width)) * np.linspace(3, 0.5, width)
    probe[:10, -1] += 30  # off every direction the images span
    statistics = fit_ood(train, labels)
    assert statistics.residual_variance is not None
    np.testing.assert_allclose(statistics.distances(probe), reference_distances(train, labels, probe, kept), rtol=1e-4)


def test_temperature_one_changes_nothing() -> None:
    log_odds = np.linspace(-5, 5, 11)
    np.testing.assert_allclose(calibrated_probability(log_odds, 1.0), 1 / (1 + np.exp(-log_odds)))

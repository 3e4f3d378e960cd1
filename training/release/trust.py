"""Fitting what makes an answer trustworthy: temperature, screening threshold, out-of-distribution statistics.

All three are fitted on held-out parts of the data, never on the test part: the out-of-distribution
Gaussian on the training part's features, its threshold, the temperature and the screening threshold on
the validation part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.covariance import LedoitWolf

from app.model_card import ModelCard, OperatingPoint
from app.scoring import POSITIVE, calibrated_probability
from training.evaluation.metrics import expected_calibration_error, operating_point
from training.networks.servable import OodStatistics

DEFAULT_TARGET_SENSITIVITY = 0.95  # a screening setting: miss at most 1 in 20 infected images
OOD_QUANTILE = 0.975  # of the validation part's distances: ~2.5% of in-distribution images flagged


@dataclass(frozen=True)
class FittedTrust:
    temperature: float
    temperature_selection: str
    threshold: float
    validation_point: OperatingPoint
    ood: OodStatistics
    ood_threshold: float


def fit_temperature(log_odds: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood on held-out images (Guo et al., 2017)."""
    positive = (labels == POSITIVE).astype(np.float64)

    def nll(log_temperature: float) -> float:
        p = np.clip(calibrated_probability(log_odds, float(np.exp(log_temperature))), 1e-12, 1 - 1e-12)
        return float(-np.mean(positive * np.log(p) + (1 - positive) * np.log(1 - p)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(50.0)), method="bounded")
    return float(np.exp(result.x))


def choose_temperature(
    log_odds: np.ndarray, labels: np.ndarray, groups: list[str], folds: int = 5
) -> tuple[float, str]:
    """Temperature scaling, kept only where it lowers the calibration error on held-out patients.

    Grouped, stratified k-fold inside the validation part: fit on k-1 folds, measure ECE on the
    last, with and without scaling. A temperature that does not help there is not used (1.0)."""
    from sklearn.model_selection import StratifiedGroupKFold

    fitted = fit_temperature(log_odds, labels)
    n_folds = min(folds, len(set(groups)), int(np.bincount(labels).min()))
    if n_folds < 2:
        return fitted, "fitted on the whole validation part (too few groups to check it)"
    scaled, unscaled = np.zeros(len(labels)), calibrated_probability(log_odds, 1.0)
    for fit_part, held_out in StratifiedGroupKFold(n_folds, shuffle=True, random_state=0).split(
        log_odds, labels, groups
    ):
        scaled[held_out] = calibrated_probability(
            log_odds[held_out], fit_temperature(log_odds[fit_part], labels[fit_part])
        )
    with_scaling = expected_calibration_error(scaled, labels)
    without = expected_calibration_error(unscaled, labels)
    verdict = (
        f"grouped {n_folds}-fold cross-validation inside the validation part: held-out ECE "
        f"{with_scaling:.4f} with temperature scaling, {without:.4f} without"
    )
    if with_scaling < without:
        return fitted, verdict + "; scaling kept"
    return 1.0, verdict + "; scaling not used (temperature 1)"


def screening_threshold(probabilities: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold at which at least `target_sensitivity` of the infected images are caught."""
    infected = np.sort(probabilities[labels == POSITIVE])[::-1]
    if infected.size == 0:
        raise ValueError("no infected image to choose a screening threshold on")
    needed = int(np.ceil(target_sensitivity * infected.size))
    return float(infected[max(needed, 1) - 1])


def target_sensitivity_of(card: ModelCard) -> float:
    """The sensitivity a version's screening threshold was fitted for (the default before it had one)."""
    return card.screening.target_sensitivity if card.screening else DEFAULT_TARGET_SENSITIVITY


def fit_ood(features: np.ndarray, labels: np.ndarray) -> OodStatistics:
    """Class means and a shared, shrunk covariance (Ledoit-Wolf) of standardised features."""
    center = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6  # a dead feature must not divide by zero
    standard = (features - center) / scale
    classes = sorted(set(labels.tolist()))
    means = np.stack([standard[labels == c].mean(axis=0) for c in classes])
    residuals = standard - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf().fit(residuals).covariance_
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, eigenvalues.max() * 1e-8)
    whitening = eigenvectors / np.sqrt(eigenvalues)
    return OodStatistics(
        center=center.astype(np.float32),
        scale=scale.astype(np.float32),
        whitening=whitening.astype(np.float32),
        class_means=(means @ whitening).astype(np.float32),
    )


def fit_trust(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    validation_features: np.ndarray,
    validation_log_odds: np.ndarray,
    validation_labels: np.ndarray,
    validation_groups: list[str],
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> FittedTrust:
    temperature, selection = choose_temperature(validation_log_odds, validation_labels, validation_groups)
    probabilities = calibrated_probability(validation_log_odds, temperature)
    threshold = screening_threshold(probabilities, validation_labels, target_sensitivity)
    ood = fit_ood(train_features, train_labels)
    ood_threshold = float(np.quantile(ood.distances(validation_features), OOD_QUANTILE))
    return FittedTrust(
        temperature=temperature,
        temperature_selection=selection,
        threshold=threshold,
        validation_point=operating_point(probabilities, validation_labels, threshold),
        ood=ood,
        ood_threshold=ood_threshold,
    )


def random_image_statistics(model, spec, seed: int = 0, images: int = 16) -> OodStatistics:
    """Statistics of uniform-noise images: for untrained stand-ins (benchmarks, tests) whose distance
    only has to be computable, not meaningful."""
    import tensorflow as tf

    from training.networks.servable import features_and_log_odds

    noise = np.random.default_rng(seed).random((images, *spec.shape), dtype=np.float32)
    features, _ = features_and_log_odds(model, tf.data.Dataset.from_tensor_slices(noise).batch(8))
    return fit_ood(features, np.arange(images) % 2)

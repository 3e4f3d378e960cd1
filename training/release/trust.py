"""Fitting what makes an answer trustworthy: calibration, screening threshold, out-of-distribution statistics.

All three are fitted on held-out parts of the data, never on the test part: the out-of-distribution
Gaussian on the training part's features, its threshold, the calibration (none, temperature or Platt
scaling) and the screening threshold on the validation part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage

from app.contract.model_card import UNCALIBRATED, ModelCard, OperatingPoint
from app.contract.scoring import POSITIVE, calibrated_probability
from training.evaluation.metrics import expected_calibration_error, operating_point
from training.networks.servable import MemberwiseOod, OodStatistics, OutOfDistribution

DEFAULT_TARGET_SENSITIVITY = 0.95  # a screening setting: miss at most 1 in 20 infected images
REQUIRED_GAIN = 0.10  # relative ECE on held-out patients a calibration method must gain over a simpler one
OOD_QUANTILE = 0.975  # of the validation part's distances: ~2.5% of in-distribution images flagged


@dataclass(frozen=True)
class CalibrationChoice:
    """P(infected) = sigmoid(log_odds / temperature + bias), and why this method was chosen."""

    method: str  # "none", "temperature" or "platt"
    temperature: float
    bias: float
    selection: str

    @property
    def parameters(self) -> tuple[float, float]:
        return self.temperature, self.bias


@dataclass(frozen=True)
class FittedTrust:
    calibration: CalibrationChoice
    threshold: float
    validation_point: OperatingPoint
    ood: OutOfDistribution
    ood_threshold: float


Fit = Callable[[np.ndarray, np.ndarray], tuple[float, float]]  # (log-odds, labels) -> (temperature, bias)


def _negative_log_likelihood(log_odds: np.ndarray, positive: np.ndarray, temperature: float, bias: float) -> float:
    p = np.clip(calibrated_probability(log_odds, temperature, bias), 1e-12, 1 - 1e-12)
    return float(-np.mean(positive * np.log(p) + (1 - positive) * np.log(1 - p)))


def fit_temperature(log_odds: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood on held-out images (Guo et al., 2017)."""
    positive = (labels == POSITIVE).astype(np.float64)
    result = minimize_scalar(
        lambda log_t: _negative_log_likelihood(log_odds, positive, float(np.exp(log_t)), 0.0),
        bounds=(np.log(0.05), np.log(50.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def fit_platt(log_odds: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(temperature, bias) minimising the negative log-likelihood (Platt, 1999): a slope and an intercept.

    The intercept is what temperature scaling lacks: a model trained with its classes (or sites) weighed alike
    answers for a prevalence of one half, and only a shift of the log-odds brings it to the real one."""
    positive = (labels == POSITIVE).astype(np.float64)
    bounds = [(np.log(0.05), np.log(50.0)), (-20.0, 20.0)]
    result = minimize(  # from the best temperature alone, so that the slope starts where it belongs
        lambda p: _negative_log_likelihood(log_odds, positive, float(np.exp(p[0])), float(p[1])),
        x0=[np.log(fit_temperature(log_odds, labels)), 0.0],
        method="L-BFGS-B",
        bounds=bounds,
    )
    return float(np.exp(result.x[0])), float(result.x[1])


CALIBRATION_METHODS: dict[str, Fit] = {
    "none": lambda log_odds, labels: UNCALIBRATED,
    "temperature": lambda log_odds, labels: (fit_temperature(log_odds, labels), 0.0),
    "platt": fit_platt,
}


def choose_calibration(
    log_odds: np.ndarray,
    labels: np.ndarray,
    groups: list[str],
    folds: int = 5,
    methods: tuple[str, ...] = ("none", "temperature", "platt"),
) -> CalibrationChoice:
    """The calibration (none, temperature or Platt scaling) with the lowest calibration error on held-out patients.

    Grouped, stratified k-fold inside the validation part: each method is fitted on k-1 folds and its ECE
    measured on the last. A method is used only where it lowers that error by REQUIRED_GAIN against the
    simpler one chosen before it: a fit that does not clearly help held-out patients is not used."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_folds = min(folds, len(set(groups)), int(np.bincount(labels).min()))
    if n_folds < 2:
        temperature = fit_temperature(log_odds, labels)
        return CalibrationChoice(
            "temperature",
            temperature,
            0.0,
            "temperature fitted on the whole validation part (too few groups to check it)",
        )
    held_out_ece = {}
    for method in methods:
        answers = np.zeros(len(labels))
        for fit_part, held_out in StratifiedGroupKFold(n_folds, shuffle=True, random_state=0).split(
            log_odds, labels, groups
        ):
            fitted = CALIBRATION_METHODS[method](log_odds[fit_part], labels[fit_part])
            answers[held_out] = calibrated_probability(log_odds[held_out], *fitted)
        held_out_ece[method] = expected_calibration_error(answers, labels)
    chosen = methods[0]
    for method in methods[1:]:  # a method with more parameters must earn them: 10% lower ECE than the simpler
        if held_out_ece[method] < (1 - REQUIRED_GAIN) * held_out_ece[chosen]:
            chosen = method
    temperature, bias = CALIBRATION_METHODS[chosen](log_odds, labels)
    verdict = (
        f"grouped {n_folds}-fold cross-validation inside the validation part, held-out ECE: "
        + ", ".join(f"{method} {ece:.4f}" for method, ece in held_out_ece.items())
        + f"; {chosen} used"
    )
    return CalibrationChoice(chosen, temperature, bias, verdict)


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


MAX_OOD_COMPONENTS = 640  # every feature of the paper's CNN (at most 592); the largest of a backbone's


def fit_ood(features: np.ndarray, labels: np.ndarray, bits: int = 32) -> OodStatistics:
    """Class means and a shared, shrunk covariance (Ledoit-Wolf) of standardised features; beyond
    MAX_OOD_COMPONENTS features, its largest directions and one variance for the rest (OodStatistics). With
    `bits` 16, its matrices rounded as the export stores them, so a threshold fitted on it is the export's."""
    return _fitted_ood(features, labels).rounded(bits)


def _fitted_ood(features: np.ndarray, labels: np.ndarray) -> OodStatistics:
    center = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6  # a dead feature must not divide by zero
    standard = (features - center) / scale
    classes = sorted(set(labels.tolist()))
    means = np.stack([standard[labels == c].mean(axis=0) for c in classes])
    residuals = standard - means[np.searchsorted(classes, labels)]
    if residuals.shape[1] > MAX_OOD_COMPONENTS:
        return _low_rank_ood(center, scale, means, residuals)
    eigenvalues, eigenvectors = np.linalg.eigh(LedoitWolf().fit(residuals).covariance_)
    eigenvalues = np.maximum(eigenvalues, eigenvalues.max() * 1e-8)
    whitening = eigenvectors / np.sqrt(eigenvalues)
    return OodStatistics(
        center=center.astype(np.float32),
        scale=scale.astype(np.float32),
        whitening=whitening.astype(np.float32),
        class_means=(means @ whitening).astype(np.float32),
    )


def _low_rank_ood(center: np.ndarray, scale: np.ndarray, means: np.ndarray, residuals: np.ndarray) -> OodStatistics:
    """The same Ledoit-Wolf covariance, (1 - s) * S + s * mu * I, without forming or decomposing it (an F x F
    eigendecomposition of a wide backbone's 4,328 features took a minute): S's directions are the residuals'
    right singular vectors, and every direction S does not span shares the eigenvalue s * mu. Kept are the
    largest (at most MAX_OOD_COMPONENTS, at most S's rank: a kept direction with the rest's variance would not
    change a distance); the rest's mean variance follows from the trace, which shrinkage leaves unchanged."""
    centred = residuals - residuals.mean(axis=0)  # as LedoitWolf does
    samples, width = centred.shape
    shrinkage = ledoit_wolf_shrinkage(centred, assume_centered=True)
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
    mean_variance = float((singular_values**2).sum()) / (samples * width)  # mu = trace(S) / F
    variances = (1 - shrinkage) * singular_values**2 / samples + shrinkage * mean_variance
    kept = min(MAX_OOD_COMPONENTS, int(np.sum(singular_values > singular_values.max() * 1e-6)))
    variances = np.maximum(variances[:kept], variances.max() * 1e-8)
    whitening = directions[:kept].T / np.sqrt(variances)
    residual_variance = (width * mean_variance - variances.sum()) / (width - kept)
    return OodStatistics(
        center=center.astype(np.float32),
        scale=scale.astype(np.float32),
        whitening=whitening.astype(np.float32),
        class_means=(means @ whitening).astype(np.float32),
        variances=variances.astype(np.float32),
        standard_means=means.astype(np.float32),
        residual_variance=float(max(residual_variance, variances.max() * 1e-8)),
    )


def fit_memberwise_ood(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    validation_features: np.ndarray,
    widths: Sequence[int],
    bits: int = 32,
) -> MemberwiseOod:
    """One Gaussian per member on its own features, each scaled by its validation part's OOD_QUANTILE."""
    bounds = np.cumsum(widths)[:-1]
    members = tuple(fit_ood(part, train_labels, bits) for part in np.split(train_features, bounds, axis=1))
    scales = tuple(
        float(np.quantile(member.distances(part), OOD_QUANTILE))
        for member, part in zip(members, np.split(validation_features, bounds, axis=1))
    )
    return MemberwiseOod(members=members, widths=tuple(int(w) for w in widths), scales=scales)


def answer_rule(
    log_odds: np.ndarray, labels: np.ndarray, groups: list[str], target_sensitivity: float
) -> tuple[CalibrationChoice, float]:
    """How the service answers, fitted on a validation part: its calibration and its screening threshold."""
    calibration = choose_calibration(log_odds, labels, groups)
    probabilities = calibrated_probability(log_odds, *calibration.parameters)
    return calibration, screening_threshold(probabilities, labels, target_sensitivity)


def fit_trust(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    validation_features: np.ndarray,
    validation_log_odds: np.ndarray,
    validation_labels: np.ndarray,
    validation_groups: list[str],
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    feature_widths: Sequence[int] = (),
    ood_bits: int = 32,
) -> FittedTrust:
    """`feature_widths`: an ensemble's members' numbers of features side by side; each member then gets its own
    distance (MemberwiseOod). `ood_bits`: what the export stores the distance's matrices at."""
    calibration, threshold = answer_rule(validation_log_odds, validation_labels, validation_groups, target_sensitivity)
    probabilities = calibrated_probability(validation_log_odds, *calibration.parameters)
    ood: OutOfDistribution = (
        fit_memberwise_ood(train_features, train_labels, validation_features, feature_widths, ood_bits)
        if len(feature_widths) > 1
        else fit_ood(train_features, train_labels, ood_bits)
    )
    ood_threshold = float(np.quantile(ood.distances(validation_features), OOD_QUANTILE))
    return FittedTrust(
        calibration=calibration,
        threshold=threshold,
        validation_point=operating_point(probabilities, validation_labels, threshold),
        ood=ood,
        ood_threshold=ood_threshold,
    )


def random_image_statistics(model, spec, seed: int = 0, images: int = 16) -> OodStatistics:
    """Statistics of uniform-noise images: for untrained stand-ins (benchmarks, tests) whose distance
    only has to be computable, not meaningful."""
    import tensorflow as tf

    from training.networks.servable import analysed, analysis_model, members_of

    noise = np.random.default_rng(seed).random((images, *spec.shape), dtype=np.float32)
    members = members_of(model)
    # Eagerly: tracing the analysis graph for one small batch cost more than running it (DenseNet121: 9 s).
    outputs = analysed(members, [analysis_model(member) for member in members], tf.constant(noise), ())
    return fit_ood(np.asarray(outputs["features"], dtype=np.float64), np.arange(images) % 2)

"""How the model's two sigmoid outputs become the probabilities and the label we report.

The paper's head is Dense(2, sigmoid) trained with binary cross-entropy on one-hot labels, so the two
scores are independent and need not sum to 1. The uncalibrated probability of `infected` is each
score divided by their sum, s_i / (s_i + s_u) = sigmoid(log(s_i / s_u)): we work with that log-odds,
which exported models compute from their logits without saturating (app/contract/savedmodel.py). Calibration
divides it by the card's temperature and adds its bias (1 and 0: uncalibrated); the label is `infected`
when the calibrated probability reaches the card's screening threshold.

A clinic whose share of disease differs from the one the calibration was fitted at may state it: Bayes' rule
moves the log-odds by logit(clinic) - logit(calibrated at) (Saerens et al., 2002), and the screening threshold
moves with them, so the labels (and the sensitivity) stay those of the card. Measured at held-out collections
(docs/models.md): the any-grade fundus model v15's ECE 0.141 / 0.052 fell to 0.042 / 0.032 at their own prevalence.
"""

from __future__ import annotations

import math

import numpy as np

EPSILON = 1e-12
PREVALENCE_CLIP = 1e-6  # a share of exactly 0 or 1 has no log-odds
POSITIVE = 0  # index of `infected` in CLASS_NAMES
DEFAULT_THRESHOLD = 0.5


def normalise(scores: np.ndarray) -> np.ndarray:
    """N x 2 sigmoid scores -> N x 2 probabilities that sum to 1 per row."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, None)
    return scores / scores.sum(axis=-1, keepdims=True)


def log_odds_from_scores(scores: np.ndarray) -> np.ndarray:
    """N x 2 sigmoid scores -> N log(s_infected / s_uninfected), for models that export no logits."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, None)
    return np.log(scores[:, POSITIVE]) - np.log(scores[:, 1 - POSITIVE])


def calibrated_probability(log_odds: np.ndarray | float, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """Calibrated P(infected) = sigmoid(log_odds / temperature + bias), computed without overflow."""
    z = np.asarray(log_odds, dtype=np.float64) / temperature + bias
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def calibrated_score(log_odds: float, temperature: float = 1.0, bias: float = 0.0) -> float:
    """calibrated_probability of one image's log-odds, in plain floats: ~10x faster than numpy's scalar round
    trip, on the request path."""
    z = log_odds / temperature + bias
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


def logit(probability: float) -> float:
    p = min(max(probability, PREVALENCE_CLIP), 1 - PREVALENCE_CLIP)
    return math.log(p / (1 - p))


def prior_shift(calibrated_at: float, prevalence: float) -> float:
    """What to add to the calibrated log-odds where the disease's share is `prevalence`, not `calibrated_at`."""
    return logit(prevalence) - logit(calibrated_at)


def shifted_score(probability: float, shift: float) -> float:
    """A probability with `shift` added to its log-odds (a threshold moved with the answers it cuts)."""
    if shift == 0.0:
        return probability
    return calibrated_score(logit(probability) + shift)


def label_index(probability: float, threshold: float) -> int:
    """Index into CLASS_NAMES: `infected` from the threshold up."""
    return POSITIVE if probability >= threshold else 1 - POSITIVE


def as_percentages(positive_probability: float, classes: list[str]) -> dict[str, float]:
    """P(infected) -> {class: percent}, rounded to 2 places and summing to exactly 100."""
    first = round(float(positive_probability) * 100.0, 2)
    return dict(zip(classes, [first, round(100.0 - first, 2)], strict=True))

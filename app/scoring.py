"""How the model's two sigmoid outputs become the probabilities we report.

The paper's head is Dense(2, sigmoid) trained with binary cross-entropy on one-hot labels, so the two
scores are independent and need not sum to 1. We report each score divided by their sum: a
probability pair that sums to 1 and keeps the order the model gave (argmax is unchanged).
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-12


def normalise(scores: np.ndarray) -> np.ndarray:
    """N x 2 sigmoid scores -> N x 2 probabilities that sum to 1 per row."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, None)
    return scores / scores.sum(axis=-1, keepdims=True)


def as_percentages(probabilities: np.ndarray, classes: list[str]) -> dict[str, float]:
    """One row of probabilities -> {class: percent}, rounded to 2 places and summing to exactly 100."""
    first = round(float(probabilities[0]) * 100.0, 2)
    values = [first, round(100.0 - first, 2)]
    return dict(zip(classes, values, strict=True))

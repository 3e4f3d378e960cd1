from __future__ import annotations

import numpy as np

from app.scoring import as_percentages, normalise


def test_two_sigmoid_scores_become_probabilities_that_sum_to_one() -> None:
    probabilities = normalise(np.array([[0.9, 0.3], [0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[0], [0.75, 0.25])
    np.testing.assert_allclose(probabilities[1], [0.5, 0.5])  # no evidence either way


def test_percentages_are_rounded_and_sum_to_exactly_100() -> None:
    percentages = as_percentages(np.array([0.973123, 0.026877]), ["infected", "uninfected"])
    assert percentages == {"infected": 97.31, "uninfected": 2.69}
    assert sum(as_percentages(np.array([1 / 3, 2 / 3]), ["a", "b"]).values()) == 100.0

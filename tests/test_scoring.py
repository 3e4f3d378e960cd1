from __future__ import annotations

import numpy as np
import pytest

from app.contract.scoring import as_percentages, calibrated_probability, label_index, log_odds_from_scores, normalise


def test_two_sigmoid_scores_become_probabilities_that_sum_to_one() -> None:
    probabilities = normalise(np.array([[0.9, 0.3], [0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[0], [0.75, 0.25])
    np.testing.assert_allclose(probabilities[1], [0.5, 0.5])  # no evidence either way


def test_temperature_one_gives_back_each_score_divided_by_their_sum() -> None:
    scores = np.array([[0.9, 0.3], [0.2, 0.6], [0.999, 0.001]])
    np.testing.assert_allclose(calibrated_probability(log_odds_from_scores(scores)), normalise(scores)[:, 0])


def test_temperature_softens_or_sharpens_without_changing_the_order() -> None:
    log_odds = np.array([-3.0, -0.5, 0.0, 2.0])
    soft, sharp = calibrated_probability(log_odds, 2.0), calibrated_probability(log_odds, 0.5)
    assert np.all(np.diff(soft) > 0) and np.all(np.diff(sharp) > 0)
    assert soft[3] < calibrated_probability(2.0) < sharp[3]
    assert soft[2] == sharp[2] == 0.5


def test_a_bias_moves_every_probability_as_a_change_of_prior_odds_would() -> None:
    """sigmoid(z + b): the odds of every answer multiplied by e^b, its order unchanged."""
    log_odds = np.array([-3.0, -0.5, 0.0, 2.0])
    shifted = calibrated_probability(log_odds, 1.0, np.log(0.25))
    odds = shifted / (1 - shifted)
    np.testing.assert_allclose(odds, 0.25 * np.exp(log_odds))
    assert np.all(np.diff(shifted) > 0)


def test_extreme_log_odds_do_not_overflow() -> None:
    assert calibrated_probability(np.array([-1e4, 1e4])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize(("probability", "threshold", "label"), [(0.2, 0.15, 0), (0.15, 0.15, 0), (0.1, 0.15, 1)])
def test_infected_from_the_threshold_up(probability: float, threshold: float, label: int) -> None:
    assert label_index(probability, threshold) == label


def test_percentages_are_rounded_and_sum_to_exactly_100() -> None:
    assert as_percentages(0.973123, ["infected", "uninfected"]) == {"infected": 97.31, "uninfected": 2.69}
    assert sum(as_percentages(1 / 3, ["a", "b"]).values()) == 100.0


def test_one_answers_calibrated_score_is_the_array_formula() -> None:
    from app.contract.scoring import calibrated_score

    log_odds = np.random.default_rng(1).normal(0, 30, 500)
    for temperature, bias in ((0.5, 0.0), (1.0, 0.0), (2.7, 0.0), (1.3, -0.9), (0.8, 2.0)):
        singles = [calibrated_score(float(x), temperature, bias) for x in log_odds]
        np.testing.assert_allclose(singles, calibrated_probability(log_odds, temperature, bias), rtol=0, atol=1e-15)
    assert calibrated_score(-800.0) == 0.0 and calibrated_score(800.0) == 1.0  # no overflow either way

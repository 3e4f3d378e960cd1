"""Moving calibrated answers to another clinic's share of disease, and estimating that share (cross-site's
prior-shift measurement)."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.prevalence import estimate_prevalence, prior_shift, shifted_probabilities


def test_the_shift_is_bayes_rule_and_nothing_at_the_same_prevalence() -> None:
    # P = 0.5 where 20% are ill; where 50% are: odds x (0.5 / 0.5) / (0.2 / 0.8) = 4, so P = 0.8
    assert shifted_probabilities(np.array([0.5]), calibrated_at=0.2, site=0.5)[0] == pytest.approx(0.8)
    probabilities = np.array([0.01, 0.3, 0.7, 0.99])
    np.testing.assert_allclose(shifted_probabilities(probabilities, 0.3, 0.3), probabilities)
    assert prior_shift(0.3, 0.3) == 0.0 and prior_shift(0.2, 0.5) == pytest.approx(np.log(4))


def test_the_shift_keeps_the_order_of_the_answers() -> None:
    probabilities = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(shifted_probabilities(probabilities, 0.4, 0.05)) > 0)


def simulated_site(prevalence: float, images: int = 20000, seed: int = 0) -> np.ndarray:
    """Calibrated answers of a model whose log-odds are N(+-1.5, 1) given the class, calibrated where half are
    ill, at a site where `prevalence` are."""
    rng = np.random.default_rng(seed)
    ill = rng.random(images) < prevalence
    log_odds = np.where(ill, 1.5, -1.5) + rng.normal(size=images)
    # the exact posterior at prevalence 0.5: log-odds of the likelihood ratio, 2 * 1.5 * x
    return 1.0 / (1.0 + np.exp(-3.0 * log_odds))


@pytest.mark.parametrize("prevalence", [0.1, 0.3, 0.5, 0.8])
def test_expectation_maximisation_finds_the_sites_prevalence_from_unlabelled_answers(prevalence: float) -> None:
    assert estimate_prevalence(simulated_site(prevalence), calibrated_at=0.5) == pytest.approx(prevalence, abs=0.02)


def test_no_image_gives_no_estimate() -> None:
    with pytest.raises(ValueError, match="no image"):
        estimate_prevalence(np.array([]), calibrated_at=0.5)

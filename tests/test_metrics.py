"""Test-set metrics: the rank-based ROC AUC is sklearn's, ties included, and the bootstrap's many-resamples form
is compute_metrics for each resample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.evaluation.metrics import (
    INTERVAL_METRICS,
    compute_metrics,
    expected_calibration_error,
    probabilities_of,
    resampled_metrics,
    roc_auc,
)


@pytest.mark.parametrize("levels", [None, 5], ids=["continuous", "many-ties"])
def test_roc_auc_is_sklearns_with_and_without_ties(levels: int | None) -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        positive = rng.random(60) < rng.uniform(0.1, 0.9)
        positive[:2] = [True, False]  # both classes
        scores = rng.random(60) + 0.5 * positive
        if levels:
            scores = np.round(scores * levels) / levels
        assert roc_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_the_metrics_auc_ranks_infected_above_uninfected_and_is_absent_with_one_class() -> None:
    labels = np.array([0, 0, 1, 1, 1])  # 0: infected
    infected = np.array([0.9, 0.4, 0.5, 0.2, 0.1])
    assert compute_metrics(labels, probabilities_of(infected)).roc_auc == pytest.approx(5 / 6)
    assert compute_metrics(labels[:2], probabilities_of(infected[:2])).roc_auc is None


@pytest.mark.parametrize("levels", [None, 4], ids=["continuous", "many-ties"])
def test_resampled_metrics_are_compute_metrics_of_each_resample(levels: int | None) -> None:
    """A resample as weights (how often it drew each image) gives what compute_metrics gives on the images it
    drew, one class missing included (no AUC then, and 0 for a ratio with nothing to count)."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 40)
    scores = rng.random(40) * 0.7 + 0.3 * (labels == 0)
    if levels:
        scores = np.round(scores * levels) / levels
    weights = rng.poisson(1.0, (30, 40)).astype(np.float64)
    weights[0, labels == 0] = 0  # no infected image drawn
    weights[1, scores >= 0.5] = 0  # nothing predicted infected
    together = resampled_metrics(labels == 0, scores, weights, threshold=0.5)
    for row, drawn in enumerate(weights.astype(int)):
        images = np.repeat(np.arange(40), drawn)
        one = compute_metrics(labels[images], probabilities_of(scores[images]), threshold=0.5)
        for name in INTERVAL_METRICS:
            expected = getattr(one, name)
            if expected is None:
                assert np.isnan(together[name][row])
            else:
                assert together[name][row] == pytest.approx(expected, abs=1e-12), (row, name)


def test_the_ece_floor_is_what_a_perfectly_calibrated_model_measures_and_shrinks_with_more_images() -> None:
    from training.evaluation.metrics import calibrated_ece_floor

    rng = np.random.default_rng(5)
    few, many = (1 / (1 + np.exp(-rng.normal(0, 1.8, n))) for n in (220, 2200))
    measured = [  # a model calibrated by construction: labels drawn from its own answers, other draws than the floor's
        expected_calibration_error(few, np.where(rng.random(len(few)) < few, 0, 1)) for _ in range(300)
    ]
    assert calibrated_ece_floor(few) == pytest.approx(np.mean(measured), rel=0.1)
    assert calibrated_ece_floor(few) > 0.04 and calibrated_ece_floor(many) < 0.5 * calibrated_ece_floor(few)

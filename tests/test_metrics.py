"""Test-set metrics: the rank-based ROC AUC is sklearn's, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.evaluation.metrics import compute_metrics, probabilities_of, roc_auc


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

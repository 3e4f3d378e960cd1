"""Would a clinic's answers be better calibrated if moved to its own share of disease? (Measured, not served.)

A calibration is fitted on one part of the training sites' images, so its P(infected) is right where
disease is as common as it was there. If another clinic differs only in that share (prior shift: the
images of each class look alike), Bayes' rule moves the answers exactly: the log-odds gain logit(site) -
logit(calibrated at) (Saerens et al., 2002). The share can be known, or estimated from the clinic's
unlabelled answers by Saerens' expectation-maximisation.

`python -m training cross-site` measures both at every held-out site (`prior_shift` in each round). On
Messidor-2's two collections (2026-11-30) the models of then were made worse by both. With the ImageNet-start
ensembles (2026-12-07) a known share makes them better (retinopathy v15: ECE 0.141 / 0.052 -> 0.042 / 0.032;
referable: 0.060 / 0.043 -> 0.028 / 0.019), the estimated one still does not (0.087 / 0.051; 0.107 / 0.050): so
the service shifts to a share the clinic states (`prevalence`, app/contract/scoring.py), and never estimates one.
"""

from __future__ import annotations

import numpy as np

from app.contract.scoring import PREVALENCE_CLIP as CLIP
from app.contract.scoring import prior_shift

EM_ITERATIONS = 200
EM_TOLERANCE = 1e-7


def log_odds(probabilities: np.ndarray | list[float]) -> np.ndarray:
    """P(infected) -> log-odds, finite at 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


def shifted_probabilities(probabilities: np.ndarray, calibrated_at: float, site: float) -> np.ndarray:
    """Calibrated P(infected) -> the same answers at a site of prevalence `site`."""
    z = log_odds(probabilities) + prior_shift(calibrated_at, site)
    return 1.0 / (1.0 + np.exp(-z))


def estimate_prevalence(probabilities: np.ndarray, calibrated_at: float) -> float:
    """A site's prevalence from its unlabelled images' calibrated P(infected) (Saerens et al., 2002):
    shift the answers to a guessed prevalence, take their mean as the next guess, until it holds still.
    Only as good as the calibration's ranking and the assumption that nothing but the prior moved."""
    if len(probabilities) == 0:
        raise ValueError("no image to estimate a prevalence from")
    prevalence = calibrated_at
    for _ in range(EM_ITERATIONS):
        updated = float(np.mean(shifted_probabilities(probabilities, calibrated_at, prevalence)))
        if abs(updated - prevalence) < EM_TOLERANCE:
            return updated
        prevalence = updated
    return prevalence

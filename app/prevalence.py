"""Calibrated answers at a clinic whose share of disease differs from the one the model was calibrated at.

A calibration is fitted on one part of the training sites' images, so its P(infected) is right where
disease is as common as it was there. Another clinic (a screening programme, a referral centre) sees the
disease more or less often; the images look alike, only the prior moves (prior shift, label shift). Bayes'
rule moves the answer with it exactly: the log-odds gain logit(site) - logit(calibrated at) (Saerens et
al., 2002, and every textbook). The ranking, and so the screening threshold's sensitivity, does not change.

The clinic's prevalence can be known (a register, a programme's figures) or estimated from its own
unlabelled images: `estimate_prevalence`, Saerens' expectation-maximisation.
"""

from __future__ import annotations

import math

import numpy as np

EM_ITERATIONS = 200
EM_TOLERANCE = 1e-7
CLIP = 1e-6  # a prevalence of exactly 0 or 1 has no log-odds


def logit(prevalence: float) -> float:
    p = min(max(prevalence, CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def prior_shift(calibrated_at: float, site: float) -> float:
    """What to add to the calibrated log-odds for a site where the disease's share is `site`."""
    return logit(site) - logit(calibrated_at)


def shifted_probabilities(probabilities: np.ndarray, calibrated_at: float, site: float) -> np.ndarray:
    """Calibrated P(infected) -> the same answers at a site of prevalence `site`."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), CLIP, 1 - CLIP)
    z = np.log(p / (1 - p)) + prior_shift(calibrated_at, site)
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

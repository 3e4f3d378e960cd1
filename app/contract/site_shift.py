"""The second out-of-distribution signal: "the same kind of image, but unlike the training sites'".

The out-of-distribution check flags an image whose feature distance lies beyond the 97.5th percentile of
the validation part's: another organ, a photograph, noise. An image from another hospital is often closer
than that, yet further than most of the training sites' own images. So each answer also carries where its
distance falls among the validation part's distances (a percentile, from quantiles kept in the card), and
beyond SITE_SHIFT_PERCENTILE it is marked as unlike the training sites: its label stands, but the figures
that apply are those measured at held-out sites (the card's `generalisation`), not the test part's.
How well it separates a new site's images is measured by leave-one-site-out (training/experiments/cross_site.py).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

SITE_SHIFT_PERCENTILE = 90.0  # a known site's own images pass it 9 times in 10
PERCENTILES = tuple(float(p) for p in range(0, 101, 5))  # the validation distances kept in the card


def distance_quantiles(validation_distances: np.ndarray) -> list[float]:
    """The validation part's distances at PERCENTILES, as the card keeps them."""
    return [float(q) for q in np.percentile(validation_distances, PERCENTILES)]


def distance_percentile(
    distance: float, quantiles: Sequence[float], percentiles: Sequence[float] = PERCENTILES
) -> float:
    """Where a distance falls among the validation part's (0-100, interpolated between kept quantiles), as
    np.interp gives it, in plain floats: one answer's worth, on the request path."""
    if distance <= quantiles[0]:
        return percentiles[0]
    if distance >= quantiles[-1]:
        return percentiles[-1]
    upper = bisect_right(quantiles, distance)
    low, high = quantiles[upper - 1], quantiles[upper]
    if high == low:
        return percentiles[upper]
    return percentiles[upper - 1] + (distance - low) / (high - low) * (percentiles[upper] - percentiles[upper - 1])


def with_threshold(
    quantiles: Sequence[float], threshold: float, threshold_percentile: float
) -> tuple[list[float], list[float]]:
    """The kept quantiles with the out-of-distribution threshold as one more (its percentile is known).

    Between the 95th percentile and the largest validation distance (which one odd image can make huge) the
    interpolation would put an image flagged out of distribution near 95; with the threshold as a knot, an
    image beyond it is placed beyond its percentile (97.5), as the flag says."""
    position = bisect_right(PERCENTILES, threshold_percentile)
    fits = (
        len(quantiles) == len(PERCENTILES)
        and 0 < position < len(PERCENTILES)
        and PERCENTILES[position - 1] < threshold_percentile
        and quantiles[position - 1] <= threshold <= quantiles[position]
    )
    if not fits:  # a percentile already kept, or a threshold out of line with them: the kept ones alone
        return list(quantiles), list(PERCENTILES)
    return (
        [*quantiles[:position], threshold, *quantiles[position:]],
        [*PERCENTILES[:position], threshold_percentile, *PERCENTILES[position:]],
    )


def unlike_training_sites(percentile: float) -> bool:
    return percentile > SITE_SHIFT_PERCENTILE

"""feature-probe: where it taps an EfficientNet-Lite, what it pools there, and how one candidate is scored."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, InputSpec
from training.experiments.feature_probe import CANDIDATES, probe_round, tapped_features, taps
from training.networks.architectures import make_architecture

SIDE = 64


@pytest.fixture(scope="module")
def network():
    return make_architecture("efficientnet_lite0", InputSpec(height=SIDE, width=SIDE, colour_mode=ColourMode.RGB))


def test_every_candidate_names_only_tapped_features() -> None:
    tapped = {f"{tap}_{pooling}" for tap in taps("efficientnet_lite2") for pooling in ("avg", "max")}
    assert {name for names in CANDIDATES for name in names} <= tapped


def test_the_taps_sit_at_each_stages_end_at_its_stride(network) -> None:
    """Stages 3-6 end at 1/8, 1/16, 1/16 and 1/32 of the input side, with B0's 40, 80, 112 and 192 channels."""
    expected = {
        "stage3": (SIDE // 8, 40),
        "stage4": (SIDE // 16, 80),
        "stage5": (SIDE // 16, 112),
        "stage6": (SIDE // 32, 192),
    }
    for tap, (side, channels) in expected.items():
        assert network.get_layer(taps(network.name)[tap]).output.shape[1:] == (side, side, channels)


def test_a_network_other_than_an_efficientnet_lite_is_refused() -> None:
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        taps("mobilenet_v2")


def test_tapped_features_are_each_taps_average_and_maximum_for_the_image_and_its_mirror(network) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8)
    features = tapped_features(network, pixels, batch_size=2)
    assert features["stage4_avg_0"].shape == (3, 80) and features["top_max_1"].shape == (3, 1280)
    assert np.all(features["stage3_max_0"] >= features["stage3_avg_0"])
    symmetric = np.repeat(pixels[:, :, : SIDE // 2], 2, axis=2)
    symmetric[:, :, SIDE // 2 :] = symmetric[:, :, : SIDE // 2][:, :, ::-1]
    mirrored = tapped_features(network, symmetric, batch_size=2)
    # a mirror-symmetric image's mirror is itself: both views pool the same features
    np.testing.assert_allclose(mirrored["top_avg_0"], mirrored["top_avg_1"], rtol=1e-4, atol=1e-5)


def test_a_round_ranks_held_out_rows_by_the_feature_that_carries_the_label() -> None:
    rng = np.random.default_rng(1)
    infected = np.tile([0, 1], 60)
    plain = rng.normal(size=(120, 5))
    plain[:, 2] += 3.0 * infected
    mirrored = plain + rng.normal(scale=0.1, size=plain.shape)
    rows = np.arange(120)
    result = probe_round(plain, mirrored, infected, rows[:60], rows[60:90], rows[90:])
    assert result["roc_auc"] > 0.9
    shuffled = probe_round(plain, mirrored, rng.permutation(infected), rows[:60], rows[60:90], rows[90:])
    assert shuffled["roc_auc"] < 0.75  # labels unrelated to the features: no better than chance

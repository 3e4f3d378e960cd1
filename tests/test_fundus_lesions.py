"""The hand-made lesion measures (`--arch fundus_lesions`): they see spots, not vessels, and build as a network."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.contract.preprocessing import ColourMode, InputSpec
from training.networks import fundus_lesions as lesions
from training.networks.architectures import FUNDUS_LESIONS, make_architecture
from training.networks.servable import analysis_model

SIDE = 256
SPEC = InputSpec(height=SIDE, width=SIDE, colour_mode=ColourMode.RGB)
DARK_SMALL = 0  # index of the map of the shortest line (microaneurysms)
BRIGHT_SMALL = len(lesions.LINE_LENGTHS)


LATTICE = [(y, x) for y in (50, 66, 82) for x in (135, 155, 175, 195)]  # 12 places clear of the vessels


def fundus(*, dark_spots: int = 0, bright_spots: int = 0, seed: int = 0) -> np.ndarray:
    """An orange disc on black, an optic disc, three vessels as dark curves, mild noise; then the spots (1 px
    sigma, 28% contrast: a microaneurysm or a small exudate at 256 px), dark ones first, on LATTICE."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    centre = (SIDE - 1) / 2
    inside = (y - centre) ** 2 + (x - centre) ** 2 < (0.48 * SIDE) ** 2
    green = np.full((SIDE, SIDE), 90.0, np.float32) + rng.normal(0, 1.0, (SIDE, SIDE))
    green += 80 * np.exp(-((y - centre) ** 2 + (x - 0.3 * SIDE) ** 2) / (2 * 12.0**2))  # the optic disc
    for bend in (-0.4, 0.0, 0.5):  # vessels from the disc, 2-3 px wide
        curve = centre + bend * (x - 0.3 * SIDE) + 0.002 * (x - 0.3 * SIDE) ** 2
        green -= 30 * np.exp(-((y - curve) ** 2) / (2 * 1.2**2)) * (x > 0.3 * SIDE)
    for index, (sy, sx) in enumerate(LATTICE[: dark_spots + bright_spots]):
        sign = -1 if index < dark_spots else 1
        green += sign * 25 * np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * 1.0**2))
    image = np.stack([np.full_like(green, 200.0), green, np.full_like(green, 40.0)], axis=-1)
    return (np.clip(image, 0, 255) * inside[..., None]).astype(np.uint8)


def measures(*images: np.ndarray) -> np.ndarray:
    model = make_architecture(FUNDUS_LESIONS, SPEC)
    pool = keras.Model(model.inputs, model.get_layer("pool").output)
    return pool(tf.convert_to_tensor(np.stack(images), tf.float32) / 255.0).numpy()


def spot_count(row: np.ndarray, map_index: int, multiple_index: int = 3) -> int:
    """The count of spots above NOISE_MULTIPLES[multiple_index] (12: far above the noise) in one map, unlogged."""
    per_map = 2 * len(lesions.QUANTILES) + 2 * len(lesions.NOISE_MULTIPLES)
    start = 1 + map_index * per_map + 2 * len(lesions.QUANTILES)
    return round(float(np.expm1(row[start + 2 * multiple_index])))


def test_dark_spots_are_counted_and_vessels_are_not():
    plain, spotted = measures(fundus(), fundus(dark_spots=12))
    assert spot_count(plain, DARK_SMALL) == 0  # three vessels, about 200 px each, give no spots
    assert spot_count(spotted, DARK_SMALL) == 12
    assert spot_count(spotted, BRIGHT_SMALL) <= 1  # dark spots are not bright ones


def test_bright_spots_are_counted_in_the_bright_maps():
    plain, exudates = measures(fundus(), fundus(bright_spots=12))
    assert spot_count(plain, BRIGHT_SMALL) == 0
    assert spot_count(exudates, BRIGHT_SMALL) == 12
    assert spot_count(exudates, DARK_SMALL) <= 1


def test_measures_do_not_depend_on_exposure():
    # the green channel is divided by its own local background: another camera's gain cancels
    image = fundus(dark_spots=6, bright_spots=6)
    assert spot_count(measures(image)[0], DARK_SMALL) == 6
    darker = (image.astype(np.float32) * np.array([1.0, 0.7, 1.0])).astype(np.uint8)
    a, b = measures(image, darker)
    assert spot_count(a, DARK_SMALL) == spot_count(b, DARK_SMALL) == 6
    assert spot_count(a, BRIGHT_SMALL) == spot_count(b, BRIGHT_SMALL) == 6


def test_the_network_serves_like_the_others():
    model = make_architecture(FUNDUS_LESIONS, SPEC)
    assert model.get_layer("pool").output.shape[-1] == lesions.MEASURES
    assert model.layers[-1].units == 2
    outputs = analysis_model(model)(tf.zeros((2, SIDE, SIDE, 3)) + 0.5)
    assert outputs["last_conv"].shape == (2, SIDE, SIDE, lesions.CHANNELS)
    assert np.isfinite(outputs["features"].numpy()).all()  # a blank image (no fundus at all) too


def test_it_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="rgb"):
        make_architecture(FUNDUS_LESIONS, InputSpec(height=SIDE, width=SIDE, colour_mode=ColourMode.GRAYSCALE))
    with pytest.raises(ValueError, match="at least 128"):
        make_architecture(FUNDUS_LESIONS, InputSpec(height=96, width=96, colour_mode=ColourMode.RGB))
    with pytest.raises(ValueError, match="no weights"):
        make_architecture(FUNDUS_LESIONS, SPEC, weights="backbones/anything.weights.h5")


@pytest.mark.parametrize("size", [(1, 7), (13, 1), (5, 5), (25, 3)])
def test_a_rectangles_maximum_is_centred_and_reads_nothing_beyond_the_edge(size: tuple[int, int]):
    from scipy.ndimage import maximum_filter

    x = tf.random.stateless_uniform((2, 37, 41, 1), seed=size) - 2.0  # all negative: a zero pad would show
    expected = maximum_filter(x.numpy(), size=(1, *size, 1), mode="constant", cval=-np.inf)
    np.testing.assert_array_equal(lesions._max(x, size), expected)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 12.0])
def test_the_blur_is_a_gaussian_correlation_with_zeros_beyond_the_edge(sigma: float):
    """The banded products reproduce a separable correlation with zero padding, at the edges too."""
    from scipy.ndimage import correlate1d

    x = tf.random.stateless_uniform((2, 37, 41, 1), seed=(1, 2)).numpy()
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    expected = correlate1d(correlate1d(x, taps, axis=1, mode="constant"), taps, axis=2, mode="constant")
    np.testing.assert_allclose(lesions.gaussian_blur(tf.constant(x), sigma), expected, atol=1e-6)


def test_measures_do_not_depend_on_flips():
    # what lets the served graph read a lesion member once under test-time flips (servable.member_analysis)
    image = fundus(dark_spots=6, bright_spots=6)
    rows = measures(image, image[:, ::-1], image[::-1], image[::-1, ::-1])
    np.testing.assert_allclose(rows[1:], np.repeat(rows[:1], 3, axis=0), atol=1e-3)
    assert lesions.flip_invariant(make_architecture(FUNDUS_LESIONS, SPEC))
    assert not lesions.flip_invariant(make_architecture("paper_cnn", SPEC))


def test_an_ensembles_distance_reads_every_member_but_the_lesion_measures():
    assert lesions.distance_readers(["efficientnet_lite2_stages", FUNDUS_LESIONS]) == [True, False]
    assert lesions.distance_readers([FUNDUS_LESIONS, "paper_cnn", "mobilenet_v2"]) == [False, True, True]
    assert lesions.distance_readers([FUNDUS_LESIONS]) == [True]  # alone, its own distance is all there is


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_an_image_with_no_fundus_gets_finite_measures(value: float):
    # a black (or flat) image has no region where the maps count: the measures were -inf and the answer NaN
    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    outputs = analysis_model(make_architecture(FUNDUS_LESIONS, spec))(tf.fill((1, 128, 128, 3), value))
    assert np.isfinite(outputs["penultimate"]).all() and np.isfinite(outputs["features"]).all()


def test_the_exported_graph_holds_the_maps_once(tmp_path):
    """Every signature calls one stored function of the maps, with no forward and backward copies of it for the
    explanation's tape: inlined or copied, they took the retinopathy ensemble over its 20 MB."""
    from tensorflow.core.protobuf import saved_model_pb2

    from tests.model_fixtures import export_untrained

    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    folder = export_untrained(
        tmp_path, "retinopathy", colour_mode="rgb", size=128, model=make_architecture(FUNDUS_LESIONS, spec)
    )
    saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    library = saved.meta_graphs[0].graph_def.library.function
    stored = [f.signature.name for f in library if "lesion_maps" in f.signature.name]
    # recorded by the tape, it was stored three times: __inference_, __forward_ and __inference___backward_
    assert len(stored) == 1 and stored[0].startswith("__inference_lesion_maps"), stored

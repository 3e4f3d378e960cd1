"""Kernels stored at 16 or 8 bits: the rounding, the per-channel int8 scales, and an export that answers as the
rounded Keras model and comes back from disk as the same float32 weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.contract.preprocessing import ColourMode, InputSpec
from app.contract.savedmodel import load_model
from tests.model_fixtures import export_untrained
from training.networks.model import make_model
from training.networks.servable import head, rebuild_keras_model, round_kernels
from training.networks.stored_kernels import SCALE_SUFFIX, channel_axis, quantized, rounded

SIZE = 50
SPEC = InputSpec(height=SIZE, width=SIZE, colour_mode=ColourMode.GRAYSCALE)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((3, 3, 16, 32), 3), ((3, 3, 16, 1), 2), ((64, 2), 1), ((128, 1), 0)],
    ids=["conv", "depthwise", "dense", "one-unit dense"],
)
def test_each_output_channel_gets_its_own_scale(shape: tuple[int, ...], axis: int) -> None:
    assert channel_axis(shape) == axis
    values = np.random.default_rng(0).normal(0, 1, shape) * np.geomspace(1e-3, 1, shape[axis]).reshape(
        [-1 if a == axis else 1 for a in range(len(shape))]
    )
    levels, scale = quantized(values.astype(np.float32))
    assert levels.dtype == np.int8 and scale.dtype == np.float32
    assert scale.shape == tuple(n if a == axis else 1 for a, n in enumerate(shape))
    # every channel uses the whole range, so a small channel keeps its precision beside a large one
    assert np.all(np.abs(levels).max(axis=tuple(a for a in range(len(shape)) if a != axis)) == 127)
    assert np.all(np.abs(levels * scale - values) <= scale / 2 + 1e-7)


def test_a_zero_channel_stays_zero_and_values_beyond_float16_are_refused() -> None:
    values = np.zeros((3, 3, 4, 2), np.float32)
    values[..., 1] = 0.5
    assert np.array_equal(rounded(values, 8), values)
    np.testing.assert_array_equal(rounded(values, 16), values)
    with pytest.raises(ValueError, match="float16"):
        rounded(np.full((2, 2), 1e6, np.float32), 16)
    with pytest.raises(ValueError, match="8, 16, 32"):
        rounded(values, 4)


def test_rounding_in_place_touches_only_kernels_below_the_head() -> None:
    keras.utils.set_random_seed(2)
    model = make_model(SPEC)
    before = {variable.path: np.array(variable.numpy()) for variable in model.variables}
    round_kernels([model], 8)
    for variable in model.variables:
        after, original = np.asarray(variable.numpy()), before[variable.path]
        if len(variable.shape) >= 2 and variable.path != head(model).kernel.path:
            np.testing.assert_array_equal(after, rounded(original, 8))
            assert not np.array_equal(after, original)
        else:  # biases, BatchNorm statistics and the head (every feature's weight counts) stay as trained
            np.testing.assert_array_equal(after, original)


@pytest.fixture(scope="module")
def at_8_bits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    keras.utils.set_random_seed(4)
    model = make_model(SPEC)
    round_kernels([model], 8)  # as `release` does before it fits and exports
    return export_untrained(tmp_path_factory.mktemp("int8"), "malaria", model=model, kernel_bits=8), model


def test_an_export_at_8_bits_stores_int8_kernels_and_answers_as_the_rounded_model(at_8_bits) -> None:
    folder, model = at_8_bits
    stored = tf.saved_model.load(str(folder)).weights
    kernels = [v for v in stored if len(v.shape) >= 2 and "ood_distance" not in v.name and SCALE_SUFFIX not in v.name]
    head_kernel = head(model).kernel.path
    assert {v.dtype for v in kernels if v.name.removesuffix(":0") != head_kernel} == {tf.int8}
    assert [v.dtype for v in kernels if v.name.removesuffix(":0") == head_kernel] == [tf.float32]
    assert len([v for v in stored if SCALE_SUFFIX in v.name]) == len(kernels) - 1
    # the out-of-distribution matrices at 16 bits: int8 would move a distance summed over every direction
    assert {v.dtype for v in stored if "ood_distance" in v.name and len(v.shape) >= 2} == {tf.float16}
    images = np.random.default_rng(7).random((5, SIZE, SIZE, 1), dtype=np.float32)
    expected = model(images, training=False).numpy()
    served = load_model(folder)
    np.testing.assert_allclose(served.predict(images), expected, atol=1e-5)


def test_an_export_at_8_bits_is_rebuilt_as_the_same_float32_weights(at_8_bits) -> None:
    folder, model = at_8_bits
    rebuilt = rebuild_keras_model(folder, make_model(SPEC))
    for original, back in zip(model.variables, rebuilt.variables, strict=True):
        if "seed_generator" in back.path:  # dropout's random state: not saved
            continue
        assert back.dtype == "float32"
        np.testing.assert_allclose(back.numpy(), original.numpy(), rtol=1e-6, atol=1e-9)


def test_int8_kernels_take_a_quarter_of_the_bytes(tmp_path: Path) -> None:
    def kernel_bytes(bits: int) -> int:
        keras.utils.set_random_seed(4)
        model = make_model(SPEC)
        round_kernels([model], bits)
        folder = export_untrained(tmp_path / str(bits), "malaria", model=model, kernel_bits=bits)
        stored = tf.saved_model.load(str(folder)).weights
        return sum(v.dtype.size * int(np.prod(v.shape)) for v in stored if "ood_distance" not in v.name)

    assert kernel_bytes(8) < 0.27 * kernel_bytes(32)


def test_distance_statistics_fitted_at_16_bits_are_the_exports_own(tmp_path: Path) -> None:
    """The threshold is fitted on `fit_ood(..., bits=16)`'s distances: they must be what the export computes."""
    from training.networks.servable import features_and_log_odds, write_savedmodel
    from training.release.trust import fit_ood

    keras.utils.set_random_seed(5)
    model = make_model(SPEC)
    round_kernels([model], 8)
    rng = np.random.default_rng(8)
    train = rng.random((40, SIZE, SIZE, 1), dtype=np.float32)
    features, _ = features_and_log_odds(model, tf.data.Dataset.from_tensor_slices(train).batch(20))
    statistics = fit_ood(features, np.arange(40) % 2, bits=16)
    assert np.array_equal(statistics.whitening, statistics.whitening.astype(np.float16).astype(np.float32))
    exact = fit_ood(features, np.arange(40) % 2)
    np.testing.assert_allclose(statistics.distances(features), exact.distances(features), rtol=2e-3)

    write_savedmodel(model, SPEC, statistics, tmp_path / "v", kernel_bits=8)
    probe = rng.random((6, SIZE, SIZE, 1), dtype=np.float32)
    probe_features, _ = features_and_log_odds(model, tf.data.Dataset.from_tensor_slices(probe).batch(6))
    served = tf.saved_model.load(str(tmp_path / "v")).signatures["analyse"](image=tf.constant(probe))["ood_distance"]
    np.testing.assert_allclose(served, statistics.distances(probe_features), rtol=1e-4)

"""The frozen backbone's head: features under every combination of the recipe's flips (the views the served
graph averages), and a logistic regression written into the network so that it answers as the regression."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.data.pipeline import decoded_from_arrays
from training.networks.frozen_head import POOL, fit_head, pooled_features


def small_network() -> keras.Model:
    """A backbone's shape in miniature: convolutions, pooled features named as make_architecture names them,
    and the two-unit sigmoid head the regression is written into."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 5, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid", name="scores")(pooled))


def images(count: int, seed: int):
    """Bright-cornered images are class 0, others class 1; asymmetric, so that each flip changes the features."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    pixels = rng.integers(40, 120, (count, 32, 32, 3)).astype(np.uint8)
    pixels[labels == 0, :10, :6] = 240
    return decoded_from_arrays(pixels, labels), pixels


def features_of(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    extractor = keras.Model(model.inputs, model.get_layer(POOL).output)
    return extractor.predict(pixels.astype(np.float32) / 255.0, verbose=0)


def test_features_come_for_the_image_and_every_combination_of_its_flips() -> None:
    model = small_network()
    part, pixels = images(6, 1)
    rows = pooled_features(model, part, batch_size=4, flips=("horizontal", "vertical"))
    assert rows.shape[0] == 4 * 6  # as sent, mirrored, upside down, and both: the served graph's four views
    expected = [pixels, pixels[:, :, ::-1], pixels[:, ::-1], pixels[:, ::-1, ::-1]]
    for view, flipped in enumerate(expected):
        np.testing.assert_allclose(rows[view * 6 : (view + 1) * 6], features_of(model, flipped), rtol=1e-4, atol=1e-5)
    # the flips were applied, not the image taken four times
    assert np.abs(rows[:6] - rows[18:]).max() > 100 * 1e-5 + 1e-4 * np.abs(rows).max()


def test_a_flip_invariant_network_is_read_once_and_its_rows_repeated_for_every_view(monkeypatch) -> None:
    """The lesion measures answer a flip as the image (tests/test_fundus_lesions.py), and the served graph reads them
    once: the head's rows are the image's features for every view, not four passes of the network."""
    from training.networks import frozen_head

    model = small_network()
    part, pixels = images(6, 1)
    monkeypatch.setattr(frozen_head, "flip_invariant", lambda network: network is model)
    rows = pooled_features(model, part, batch_size=4, flips=("horizontal", "vertical"))
    assert rows.shape[0] == 4 * 6
    for view in range(4):
        np.testing.assert_allclose(rows[view * 6 : (view + 1) * 6], features_of(model, pixels), rtol=1e-4, atol=1e-5)


def test_the_network_answers_as_the_fitted_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    model = small_network()
    train, _ = images(40, 2)
    validation, validation_pixels = images(20, 3)
    history, strength = fit_head(model, train, validation, batch_size=8, sample_weights=None, flips=("horizontal",))
    assert strength in history["strength"] and len(history["val_loss"]) == len(history["strength"])
    features = pooled_features(model, train, batch_size=8, flips=("horizontal",))
    center, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    regression = LogisticRegression(C=strength, max_iter=2000).fit(
        (features - center) / scale, np.tile((train.labels == 0).astype(int), 2)
    )
    served = model.predict(validation_pixels.astype(np.float32) / 255.0, verbose=0)
    wanted = regression.predict_proba((features_of(model, validation_pixels) - center) / scale)[:, 1]
    np.testing.assert_allclose(served[:, 0], wanted, atol=1e-3)  # P(infected), class 0
    np.testing.assert_allclose(served[:, 1], 1 - wanted, atol=1e-3)


def graded_images(count: int, seed: int):
    """Levels 0-3 (a grade) shown by how bright a corner is, with noise; labelled infected from level 2."""
    rng = np.random.default_rng(seed)
    levels = np.arange(count) % 4
    pixels = rng.integers(40, 120, (count, 32, 32, 3)).astype(np.uint8)
    brightness = np.clip(60 + 50 * levels[:, None] + rng.normal(0, 25, (count, 1)), 0, 255)
    pixels[:, :10, :6] = brightness[:, :, None, None].astype(np.uint8)
    labels = np.where(levels >= 2, 0, 1)  # CLASS_NAMES[0] is "infected"
    return decoded_from_arrays(pixels, labels, levels.astype(np.float64)), pixels, levels


def test_an_ordinal_head_orders_every_level_and_answers_the_labels_probability() -> None:
    model = small_network()
    train, _, _ = graded_images(160, 4)
    validation, validation_pixels, validation_levels = graded_images(80, 5)
    fit_head(model, train, validation, batch_size=16, sample_weights=None, levels=(1.0, 2.0, 3.0))
    infected = model.predict(validation_pixels.astype(np.float32) / 255.0, verbose=0)[:, 0]
    by_level = [infected[validation_levels == level].mean() for level in range(4)]
    assert by_level == sorted(by_level) and by_level[3] - by_level[0] > 0.5  # each grade above the one below
    # the summed logits are scaled into the label's own probability: on the part that scaled them, the mean
    # answer is the share of infected images (a logistic fit's property), not three logits' overconfident sum
    assert abs(infected.mean() - (validation.labels == 0).mean()) < 0.01


def test_an_ordinal_head_refuses_labels_without_levels_or_levels_without_the_labels_own() -> None:
    model = small_network()
    graded, _, _ = graded_images(40, 6)
    plain, _ = images(40, 7)
    with pytest.raises(ValueError, match="labels read from a number"):
        fit_head(model, plain, plain, batch_size=16, sample_weights=None, levels=(1.0, 2.0))
    with pytest.raises(ValueError, match="must include the level the label is read from"):
        fit_head(model, graded, graded, batch_size=16, sample_weights=None, levels=(1.0, 3.0))

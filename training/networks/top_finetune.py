"""Fine-tuning only the top of a network, on activations cached once (`Recipe.fine_tune_from`).

Fine-tuning a whole ImageNet network at 448 px costs ~20 min an epoch on our 2 cores; the layers below a cut
(e.g. the end of EfficientNet-Lite0's stage 5) are kept frozen, their outputs computed once per image and
flip, and only the layers above it are trained, from a cached array: an epoch then costs the top alone. With
`frozen_backbone` too, the head is first fitted as a logistic regression on the frozen features
(frozen_head.py), so that fine-tuning starts from the best frozen answer rather than a random head. BatchNorm
layers above the cut keep their ImageNet statistics (inference mode): a few thousand images would move them
more than they can be trusted. Images are augmented only by the flips whose activations were cached.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from training.data.pipeline import DecodedSet
from training.networks.batchnorm import keep_best_epoch
from training.networks.frozen_head import flipped_views
from training.networks.model import Predictor, built_adam, predictor


def split_at(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    """(bottom: image -> the layer's output, top: that output -> the scores), sharing the model's layers."""
    try:
        cut = model.get_layer(layer_name).output
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers if "add" in layer.name or "pool" in layer.name)
        raise ValueError(f"no layer {layer_name!r} to fine-tune from in {model.name}; block ends: {names}") from None
    bottom = keras.Model(model.inputs, cut, name="frozen_bottom")
    try:
        top = keras.Model(cut, model.outputs, name="trained_top")
    except ValueError as error:  # the scores also read a layer below the cut (a tapped stage)
        raise ValueError(f"the layers above {layer_name!r} also read layers below it: cut higher ({error})") from None
    return bottom, top


def cached(bottom: Predictor, part: DecodedSet, batch_size: int, flips: tuple[str, ...] = ()) -> np.ndarray:
    """The bottom's outputs (a `predictor`) for a part's images, as they are and under every combination of the
    flips."""
    views = flipped_views(part, batch_size=batch_size, flips=flips)
    return np.concatenate([bottom(view) for view in views])


def one_hot(labels: np.ndarray) -> np.ndarray:
    return keras.utils.to_categorical(labels, 2).astype(np.float32)


def fine_tune_top(
    model: keras.Model,
    layer_name: str,
    train_part: DecodedSet,
    validation_part: DecodedSet,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    sample_weights: np.ndarray | None,
    flips: tuple[str, ...] = (),
    verbose: int = 0,
) -> tuple[dict[str, list[float]], int, float]:
    """Train the layers above `layer_name` on cached activations, keeping the epoch of the lowest validation
    loss; the model's own layers are updated. Returns (history, best epoch, seconds)."""
    started = time.perf_counter()
    bottom, top = split_at(model, layer_name)
    for layer in bottom.layers:
        layer.trainable = False
    for layer in top.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    below = predictor(bottom)
    train_x = cached(below, train_part, batch_size, flips)
    views = len(train_x) // train_part.size  # the image, then each flipped view of it
    train_y = np.tile(one_hot(train_part.labels), (views, 1))
    weights = None if sample_weights is None else np.tile(np.asarray(sample_weights, np.float32), views)
    validation = (cached(below, validation_part, batch_size), one_hot(validation_part.labels))
    top.compile(optimizer=built_adam(top, learning_rate), loss=keras.losses.BinaryCrossentropy())
    best = keep_best_epoch(epochs)
    history = top.fit(
        train_x,
        train_y,
        sample_weight=weights,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[best],
        verbose=verbose,
    )
    return history.history, best.best_epoch + 1, time.perf_counter() - started

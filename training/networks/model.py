"""The paper's CNN, and how our networks are compiled and run over a data set."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from app.contract.preprocessing import InputSpec

CONV_FILTERS = (32, 64, 128, 256)
DENSE_UNITS = (256, 128, 64)
MIN_SIDE = 46  # four unpadded 3x3 convolutions with 2x2 pooling need at least this many pixels


def make_model(
    spec: InputSpec, *, bn_momentum: float = 0.99, dropout: float = 0.2, pooled: bool = False
) -> keras.Model:
    """Four Conv(3x3, relu) + MaxPool(2) blocks, the first three with BatchNorm and Dropout;
    Flatten; Dense 256-128-64 (relu); Dropout; Dense(2, sigmoid).

    `pooled` averages the last block over the image instead of flattening it: the Dense 256 then weighs 256
    features at any input size, not (side / 16)^2 x 256, so larger inputs fit in a small model (at 224 px the
    flattened head alone is 9.4 M weights, 38 MB; pooled, the whole network is under 0.5 M)."""
    if min(spec.height, spec.width) < MIN_SIDE:
        raise ValueError(
            f"the paper's CNN needs inputs of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {spec.height}x{spec.width}"
        )
    inputs = keras.Input(shape=spec.shape, name="image")
    x = inputs
    for block, filters in enumerate(CONV_FILTERS):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{block + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
        if block < len(CONV_FILTERS) - 1:
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{block + 1}")(x)
            x = layers.Dropout(dropout, name=f"dropout{block + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x) if pooled else layers.Flatten(name="flatten")(x)
    for units in DENSE_UNITS:
        x = layers.Dense(units, activation="relu", name=f"dense{units}")(x)
    x = layers.Dropout(dropout, name="dropout_head")(x)
    outputs = layers.Dense(2, activation="sigmoid", name="scores")(x)
    return keras.Model(inputs, outputs, name="paper_cnn_pooled" if pooled else "paper_cnn")


def learning_rate_schedule(
    learning_rate: float, schedule: str, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.01)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def compile_model(
    model: keras.Model, *, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> None:
    model.compile(
        optimizer=built_adam(model, learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )


def built_adam(
    model: keras.Model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Adam:
    """Adam with its moments made now, for the model's trainable weights as they stand. Made by the first
    training step instead, inside its traced graph, they make TensorFlow trace the whole step a second time
    (measured: 2.5 of the 5.4 s a 2-epoch fit of the paper's CNN took)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    return optimizer


Predictor = Callable[[tf.data.Dataset], np.ndarray]


def predictor(model: keras.Model) -> Predictor:
    """A function of an image-batch dataset -> model(images) in inference mode, traced once for any batch size.
    Keras' predict traces a new model twice when the last batch is smaller (its shape, then a relaxed one):
    1.4 s of EfficientNet-Lite0 each time."""
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    step = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    return lambda batches: np.concatenate([step(images).numpy() for images in batches])

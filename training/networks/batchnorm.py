"""Making BatchNormalization behave in inference mode.

With the paper's order (Conv -> Pool -> BN -> Dropout) and Keras' default momentum 0.99, the moving
statistics lag far behind the batch statistics, so inference-mode predictions swing from epoch to
epoch, and augmented training batches (black borders from rotation, shift and zoom) have other
statistics than clean images. We (1) use momentum 0.9, (2) before every validation re-estimate each
BatchNorm layer's mean and variance over clean training images with the network in inference mode,
so that validation measures what the service will serve, and (3) keep the best validation epoch.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger("training")  # on stderr: stdout is for the commands' JSON answers


class RecalibratedValidation(keras.callbacks.Callback):
    """At each epoch's end: re-estimate BatchNorm statistics, then validate and log `val_*` metrics.

    Use it instead of fit(validation_data=...), and before keep_best_epoch(...) in the callback list."""

    def __init__(self, train_images: tf.data.Dataset, validation: tf.data.Dataset, max_batches: int = 8) -> None:
        super().__init__()
        self.train_images = train_images
        self.validation = validation
        self.max_batches = max_batches

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        recalibrate_batch_norm(self.model, self.train_images, self.max_batches)
        results = self.model.evaluate(self.validation, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"val_{k} {v:.4f}" for k, v in results.items()))


def keep_best_epoch(epochs: int, monitor: str = "val_loss") -> keras.callbacks.EarlyStopping:
    """Keras' EarlyStopping, used only to keep the weights of the epoch with the lowest `monitor`: its patience
    is the whole run, so it never stops early (the cosine schedule decays to its end), and it restores the best
    epoch's weights, BatchNorm statistics included, when training ends. `best_epoch` is 0-based."""
    return keras.callbacks.EarlyStopping(monitor=monitor, patience=epochs, restore_best_weights=True)


# Re-estimating BatchNorm runs a probe network per layer: cheap for the paper's 3 layers, prohibitive
# for ResNet50's 53 or DenseNet121's 120 (measured: one ResNet50 round over 20 min instead of ~5).
MAX_RECALIBRATED_BATCH_NORMS = 8


def worth_recalibrating(model: keras.Model) -> bool:
    norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    return norms <= MAX_RECALIBRATED_BATCH_NORMS


def recalibrate_batch_norm(model: keras.Model, images: tf.data.Dataset, max_batches: int = 40) -> None:
    """Set each BatchNorm layer's moving mean/variance to the statistics of its inputs, computed with
    the network in inference mode (earlier layers already recalibrated), layer by layer."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        probe = keras.Model(model.inputs, layer.input)
        total = None
        total_sq = None
        count = 0
        for batch in images.take(max_batches):
            features = probe(batch, training=False).numpy().astype(np.float64)
            flat = features.reshape(-1, features.shape[-1])
            total = flat.sum(axis=0) if total is None else total + flat.sum(axis=0)
            total_sq = (flat**2).sum(axis=0) if total_sq is None else total_sq + (flat**2).sum(axis=0)
            count += flat.shape[0]
        if total is None or total_sq is None:
            raise ValueError("no batch to re-estimate the BatchNorm statistics on")
        mean = total / count
        variance = np.maximum(total_sq / count - mean**2, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from app.contract.preprocessing import ColourMode, InputSpec
from training.networks.batchnorm import keep_best_epoch, recalibrate_batch_norm
from training.networks.model import make_model


def test_recalibration_sets_moving_statistics_to_those_of_the_inputs_in_inference_mode() -> None:
    keras.utils.set_random_seed(0)
    model = make_model(InputSpec(50, 50, ColourMode.GRAYSCALE))
    images = np.random.default_rng(0).random((64, 50, 50, 1), dtype=np.float32)
    recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(images).batch(16), max_batches=4)
    for layer in (model.get_layer(name) for name in ("bn1", "bn2", "bn3")):
        features = keras.Model(model.inputs, layer.input)(images, training=False).numpy()
        np.testing.assert_allclose(layer.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), features.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)


def test_keep_best_runs_every_epoch_and_restores_the_one_with_the_lowest_validation_loss() -> None:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False
    keep = keep_best_epoch(epochs=5)
    keep.set_model(model)
    keep.on_train_begin()
    snapshots = []
    for epoch, loss in enumerate([0.5, 0.2, 0.4, 0.6, 0.7]):  # four epochs without improvement: no stop
        model.layers[0].kernel.assign([[float(epoch)]])
        snapshots.append(model.get_weights())
        keep.on_epoch_end(epoch, {"val_loss": loss})
        assert not model.stop_training
    keep.on_train_end()
    assert keep.best_epoch == 1
    np.testing.assert_array_equal(model.get_weights()[0], snapshots[1][0])

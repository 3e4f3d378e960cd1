"""Training on several devices or machines with tf.distribute (`--strategy mirrored|multiworker`).

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585: "PerReplica
... unsupported type"), so this is TensorFlow's custom training loop from its multi-worker guide, around
the same Keras model, optimizer and recipe:
- the global batch is the recipe's batch per replica times the replicas, and the learning rate is scaled
  with it (the linear scaling rule, Goyal et al. 2017);
- every worker builds the same shuffled dataset; `AutoShardPolicy.DATA` gives each its share of every
  global batch (the images are in memory, so there are no files to shard);
- after each epoch every worker copies the synchronised weights into a local, undistributed model and
  validates it the same way (BatchNorm re-estimated first, as in the medscan recipe), so all take the same
  keep-best decision without talking;
- a checkpoint (model, optimizer, epoch) is written after each epoch: by the chief to `checkpoint_dir`,
  by the others to their own scratch folders, as the guide says; a restarted worker resumes from the
  chief's latest checkpoint;
- only the chief (task `chief`, or `worker` 0 when there is none) exports.

The cluster comes from `TF_CONFIG`, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]},
"task": {"type": "worker", "index": 0}}. The strategy must be made before any other TensorFlow work.
"""

from __future__ import annotations

import json
import logging
import os
import time
from enum import StrEnum
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.contract.preprocessing import InputSpec
from training.data.config import Recipe
from training.data.pipeline import DecodedSet, augmenter_for, evaluation_batches, images_only, training_batches
from training.networks.architectures import make_architecture
from training.networks.batchnorm import recalibrate_batch_norm, worth_recalibrating
from training.networks.model import built_adam, learning_rate_schedule
from training.networks.servable import round_kernels

log = logging.getLogger("training")


class StrategyName(StrEnum):
    DEFAULT = "default"  # model.fit on this process's devices
    MIRRORED = "mirrored"  # every local device (GPUs where present)
    MULTIWORKER = "multiworker"  # every worker in TF_CONFIG


def make_strategy(name: StrategyName) -> tf.distribute.Strategy:
    if name is StrategyName.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if name is StrategyName.MULTIWORKER:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def task() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG; a lone process is the chief."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    spec = config.get("task") or {}
    return spec.get("type", "chief"), int(spec.get("index", 0))


def is_chief() -> bool:
    kind, index = task()
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    has_chief = "chief" in (config.get("cluster") or {})
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def fit_distributed(
    spec: InputSpec,
    recipe: Recipe,
    train_part: DecodedSet,
    validation_part: DecodedSet,
    *,
    seed: int,
    strategy: tf.distribute.Strategy,
    checkpoint_dir: Path | None = None,
    arch: str = "paper_cnn",
    initial_weights: str | None = None,
):
    """The custom-loop counterpart of `training.release.train.fit_model`; returns its `FittedModel`."""
    from training.networks.fitting import FittedModel, balanced_class_weights

    keras.utils.set_random_seed(seed)
    replicas = strategy.num_replicas_in_sync
    global_batch = recipe.batch_size * replicas
    class_weights = balanced_class_weights(train_part.labels) if recipe.class_weights else None
    batches = training_batches(
        train_part,
        batch_size=global_batch,
        seed=seed,
        class_weights=class_weights,
        augmenter=augmenter_for(spec, recipe, seed=seed),
    ).with_options(_sharded_by_data())
    distributed = strategy.experimental_distribute_dataset(batches)
    steps_per_epoch = -(-train_part.size // global_batch)
    model, optimizer, epoch_done = _replicated(strategy, arch, spec, recipe, initial_weights, steps_per_epoch)
    local = _local_copy(arch, spec, recipe)
    best = BestEpoch(_local_copy(arch, spec, recipe))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_done, best=best.tracked())
    manager = _checkpoints(checkpoint, checkpoint_dir)
    train_step = _train_step(model, optimizer, strategy, global_batch)
    clean_train = images_only(train_part, batch_size=recipe.batch_size)
    validation = evaluation_batches(validation_part, batch_size=recipe.batch_size)
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_accuracy": []}
    started = time.perf_counter()
    for epoch in range(int(epoch_done.numpy()), recipe.epochs):
        total = sum(float(train_step(batch)) for batch in distributed)
        local.set_weights(model.get_weights())
        if recipe.recalibrate_bn and worth_recalibrating(local):
            recalibrate_batch_norm(local, clean_train)
        results = local.evaluate(validation, verbose=0, return_dict=True)
        _record_epoch(history, total / steps_per_epoch, results)
        log.info("epoch %d/%d (%d replicas): %s", epoch + 1, recipe.epochs, replicas, _last_epoch(history))
        best.offer(epoch + 1, float(results["loss"]), local, keep_best=recipe.keep_best)
        epoch_done.assign(epoch + 1)
        if manager is not None:
            manager.save()
    local.set_weights(best.weights_or(model))
    return FittedModel(
        model=local,
        history=history,
        best_epoch=best.epoch,
        seconds=time.perf_counter() - started,
        class_weights=class_weights,
    )


class BestEpoch:
    """The best validated epoch so far, checkpointed with the rest: a restarted run exports what an uninterrupted
    one would, even when every epoch was already done."""

    def __init__(self, copy: keras.Model) -> None:
        self.copy = copy
        self.loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.number = tf.Variable(0, dtype=tf.int64, trainable=False)

    def tracked(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(model=self.copy, loss=self.loss, epoch=self.number)

    @property
    def epoch(self) -> int:
        return int(self.number.numpy())

    def offer(self, epoch: int, loss: float, validated: keras.Model, *, keep_best: bool) -> None:
        if not keep_best or loss < float(self.loss.numpy()):
            self.copy.set_weights(validated.get_weights())
            self.loss.assign(loss)
            self.number.assign(epoch)

    def weights_or(self, model: keras.Model) -> list:
        """The best epoch's weights; from a checkpoint written before the best was kept, `model`'s (the last)."""
        return self.copy.get_weights() if self.epoch else model.get_weights()


def _replicated(
    strategy: tf.distribute.Strategy,
    arch: str,
    spec: InputSpec,
    recipe: Recipe,
    initial_weights: str | None,
    steps_per_epoch: int,
) -> tuple[keras.Model, keras.optimizers.Optimizer, tf.Variable]:
    """The network, its optimizer (the rate scaled with the replicas) and the epoch counter, in the strategy's scope."""
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = make_architecture(arch, spec, weights=initial_weights, bn_momentum=recipe.bn_momentum)
        round_kernels(model, recipe.kernel_bits)  # the start as the export will store it
        schedule = learning_rate_schedule(
            recipe.learning_rate * replicas, recipe.lr_schedule, recipe.epochs * steps_per_epoch
        )
        optimizer = built_adam(model, schedule)
        epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    return model, optimizer, epoch_done


def _local_copy(arch: str, spec: InputSpec, recipe: Recipe) -> keras.Model:
    """An undistributed copy of the network, for validation and export."""
    local = make_architecture(arch, spec, bn_momentum=recipe.bn_momentum)
    local.compile(loss=keras.losses.BinaryCrossentropy(), metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    return local


def _sharded_by_data() -> tf.data.Options:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _train_step(model: keras.Model, optimizer, strategy: tf.distribute.Strategy, global_batch: int):
    """One distributed step: each replica's weighted loss over the global batch, gradients applied, losses summed."""
    loss_of = keras.losses.BinaryCrossentropy(reduction=None)

    @tf.function
    def train_step(batch):
        def on_replica(images, labels, weights):
            with tf.GradientTape() as tape:
                per_image = loss_of(labels, model(images, training=True)) * weights
                loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(on_replica, args=batch), axis=None)

    return train_step


def _record_epoch(history: dict[str, list[float]], loss: float, validation: dict) -> None:
    history["loss"].append(loss)
    history["val_loss"].append(float(validation["loss"]))
    history["val_accuracy"].append(float(validation["accuracy"]))


def _last_epoch(history: dict[str, list[float]]) -> str:
    return " ".join(f"{name} {values[-1]:.4f}" for name, values in history.items())


def _checkpoints(checkpoint: tf.train.Checkpoint, checkpoint_dir: Path | None) -> tf.train.CheckpointManager | None:
    if checkpoint_dir is None:
        return None
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is not None:  # a restarted worker picks up where the cluster was
        checkpoint.restore(latest)
        log.info("resumed from %s", latest)
    kind, index = task()
    # Every worker must save (the save is collective), but only the chief's copy is kept.
    folder = checkpoint_dir if is_chief() else checkpoint_dir / f"scratch-{kind}-{index}"
    return tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=2)

"""Fitting a network with a recipe: class weights, augmentation, the learning-rate schedule, the best epoch kept
(Keras' EarlyStopping) and BatchNorm re-estimated before each validation where the recipe says so."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from app.contract.preprocessing import InputSpec
from training.data.config import Recipe
from training.data.pipeline import DecodedSet, augmenter_for, evaluation_batches, images_only, training_batches
from training.networks.architectures import PAPER_CNN, make_architecture
from training.networks.batchnorm import RecalibratedValidation, keep_best_epoch, worth_recalibrating
from training.networks.frozen_head import fit_head
from training.networks.model import compile_model, learning_rate_schedule
from training.networks.servable import round_kernels
from training.networks.top_finetune import fine_tune_top


def balanced_within_strata(labels: np.ndarray, strata: list[str]) -> np.ndarray:
    """One weight per image so that every (stratum, class) cell weighs the same in the loss: where one site
    holds most of a class, the network gains nothing from learning the site instead of the disease."""
    cells = [f"{stratum}|{label}" for stratum, label in zip(strata, labels.tolist(), strict=True)]
    counts = {cell: cells.count(cell) for cell in set(cells)}
    return np.array([len(cells) / (len(counts) * counts[cell]) for cell in cells], dtype=np.float32)


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels, minlength=2)
    return {index: float(len(labels) / (2 * count)) for index, count in enumerate(counts)}


@dataclass(frozen=True)
class FittedModel:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based: the epoch whose weights were kept
    seconds: float
    class_weights: dict[int, float] | None


def _validation(
    model: keras.Model, recipe: Recipe, train_part: DecodedSet, validation_batches: tf.data.Dataset
) -> tuple[list[keras.callbacks.Callback], tf.data.Dataset | None]:
    """(callbacks, Keras' validation_data): Keras validates, or, where BatchNorm statistics are re-estimated
    first, a callback does after re-estimating them."""
    if recipe.recalibrate_bn and worth_recalibrating(model):
        clean_train = images_only(train_part, batch_size=recipe.batch_size)
        return [RecalibratedValidation(clean_train, validation_batches)], None
    return [], validation_batches


def fit_model(
    spec: InputSpec,
    recipe: Recipe,
    train_part: DecodedSet,
    validation_part: DecodedSet,
    *,
    seed: int,
    verbose: int = 0,
    arch: str = PAPER_CNN,
    initial_weights: str | None = None,
    strata: list[str] | None = None,
) -> FittedModel:
    """An architecture (the paper's CNN by default) fitted with a recipe; validation picks the epoch
    (and re-estimates BatchNorm)."""
    if recipe.ordinal_levels and not recipe.frozen_backbone:
        raise ValueError("ordinal_levels is a frozen backbone's head: train with --frozen-backbone")
    keras.utils.set_random_seed(seed)
    weights = balanced_class_weights(train_part.labels) if recipe.class_weights else None
    # With the training images' sites, each site's classes weigh alike instead (recipe.balance_sites).
    per_image = balanced_within_strata(train_part.labels, strata) if recipe.balance_sites and strata else None
    augmenter = augmenter_for(spec, recipe, seed=seed)
    train_batches = training_batches(
        train_part,
        batch_size=recipe.batch_size,
        seed=seed,
        class_weights=weights,
        augmenter=augmenter,
        sample_weights=per_image,
    )
    validation_batches = evaluation_batches(validation_part, batch_size=recipe.batch_size)
    model = make_architecture(arch, spec, weights=initial_weights, bn_momentum=recipe.bn_momentum)
    round_kernels(model, recipe.kernel_bits)  # the start as the export will store it
    if recipe.frozen_backbone or recipe.fine_tune_from:
        return _fit_frozen(model, recipe, train_part, validation_part, weights, per_image, verbose)
    steps_per_epoch = -(-train_part.size // recipe.batch_size)
    compile_model(
        model,
        learning_rate=learning_rate_schedule(recipe.learning_rate, recipe.lr_schedule, recipe.epochs * steps_per_epoch),
    )
    keep_best = keep_best_epoch(recipe.epochs)
    callbacks, validation_data = _validation(model, recipe, train_part, validation_batches)
    if recipe.keep_best:
        callbacks.append(keep_best)
    started = time.perf_counter()
    history = model.fit(
        train_batches,
        validation_data=validation_data,
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )  # the pipeline shuffles
    epochs_run = len(history.history.get("loss", []))
    return FittedModel(
        model=model,
        history=history.history,
        best_epoch=keep_best.best_epoch + 1 if recipe.keep_best else epochs_run,
        seconds=time.perf_counter() - started,
        class_weights=weights,
    )


def _fit_frozen(
    model: keras.Model,
    recipe: Recipe,
    train_part: DecodedSet,
    validation_part: DecodedSet,
    class_weights: dict[int, float] | None,
    per_image: np.ndarray | None,
    verbose: int = 0,
) -> FittedModel:
    """Only the head, on the frozen backbone's features (Recipe.frozen_backbone); and then, or alone, the layers
    above `Recipe.fine_tune_from`, on their inputs cached once (top_finetune.py)."""
    if per_image is None and class_weights is not None:
        per_image = np.array([class_weights[int(label)] for label in train_part.labels])
    flips = tuple(
        flip
        for flip, wanted in (("horizontal", recipe.flip_horizontal), ("vertical", recipe.flip_vertical))
        if recipe.augment and wanted
    )
    started = time.perf_counter()
    history: dict[str, list[float]] = {}
    best_epoch = 1
    if recipe.frozen_backbone:
        history, _ = fit_head(
            model,
            train_part,
            validation_part,
            batch_size=recipe.batch_size,
            sample_weights=per_image,
            flips=flips,
            levels=recipe.ordinal_levels,
        )
    if recipe.fine_tune_from:
        history, best_epoch, _ = fine_tune_top(
            model,
            recipe.fine_tune_from,
            train_part,
            validation_part,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            sample_weights=per_image,
            flips=flips,
            verbose=verbose,
        )
    return FittedModel(
        model=model,
        history=history,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        class_weights=class_weights,
    )

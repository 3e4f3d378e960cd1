"""A frozen ImageNet backbone with a logistic-regression head (`Recipe.frozen_backbone`).

With a few thousand images, a network's own features are learnt from too little; frozen ImageNet features
with a linear head beat every recipe we had for retinopathy (issue 33: EfficientNet-Lite0 at 448 px, grouped
CV AUC 0.877 against 0.716). The pooled features are computed once per image (and once per flip where the
recipe flips), so fitting costs one forward pass instead of one per epoch. The head is scikit-learn's
L2-regularised logistic regression, its strength chosen by the validation part's log loss, then written into
the model's own Dense(2, sigmoid) head as (z, -z): sigmoid(-z) = 1 - sigmoid(z), so the exported network
answers exactly as the regression does and serves like every other model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data.pipeline import DecodedSet, prediction_batches
from training.networks.fundus_lesions import flip_invariant
from training.networks.model import predictor
from training.networks.servable import flip_views

log = logging.getLogger("training")
POOL = "pool"  # make_architecture's pooled features, before the dropout and the head
# Inverse L2 strength C, on standardised features. Referable retinopathy chose the smallest of 0.001-1.0, the
# grid's edge (2026-12-03): it reaches down to 0.0001 since.
STRENGTHS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def pooled_features(
    model: keras.Model, part: DecodedSet, *, batch_size: int, flips: tuple[str, ...] = ()
) -> np.ndarray:
    """N x F pooled features of a part's images, as they are and under every combination of the flips (as the
    served graph answers): views x N rows."""
    extract = predictor(keras.Model(model.inputs, model.get_layer(POOL).output))
    if flip_invariant(model):  # its flips answer as the image does, and the served graph reads it once: so here
        plain = extract(prediction_batches(part, batch_size=batch_size))  # (a quarter of the time under two flips)
        return np.concatenate([plain] * (1 + len(flip_views(flips)))).astype(np.float64)
    views = flipped_views(part, batch_size=batch_size, flips=flips)
    return np.concatenate([extract(view) for view in views]).astype(np.float64)


def flipped_views(part: DecodedSet, *, batch_size: int, flips: tuple[str, ...] = ()) -> list[tf.data.Dataset]:
    """A part's images as they are, then under every combination of the flips, each a dataset."""
    plain = [prediction_batches(part, batch_size=batch_size)]
    return plain + [
        prediction_batches(part, batch_size=batch_size).map(lambda x, a=axes: tf.reverse(x, a))
        for axes in flip_views(flips)
    ]


def fit_head(
    model: keras.Model,
    train_part: DecodedSet,
    validation_part: DecodedSet,
    *,
    batch_size: int,
    sample_weights: np.ndarray | None,
    flips: tuple[str, ...] = (),
    levels: tuple[float, ...] = (),
) -> tuple[dict[str, list[float]], float]:
    """Fit the head on frozen features; returns a history (validation log loss by strength) and the chosen C.
    With `levels` (Recipe.ordinal_levels), one regression per level is summed (ordinal_head)."""
    started = time.perf_counter()
    train_features = pooled_features(model, train_part, batch_size=batch_size, flips=flips)
    validation_features = pooled_features(model, validation_part, batch_size=batch_size)
    log.info("frozen features: %d + %d rows in %.0f s", len(train_features), len(validation_features),
             time.perf_counter() - started)  # fmt: skip
    views = len(train_features) // train_part.size  # the image, then each flipped view of it
    center, scale = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    train_rows = Rows((train_features - center) / scale, views)
    validation_rows = Rows((validation_features - center) / scale, 1)
    infected = (train_part.labels == 0).astype(int)  # CLASS_NAMES[0] is "infected"
    weights = np.ones(len(infected)) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
    validation_infected = (validation_part.labels == 0).astype(int)
    history, strength, head = fit_regression(train_rows, infected, weights, validation_rows, validation_infected)
    coef, intercept = head.coef_[0], float(head.intercept_[0])
    if levels:
        parts = (train_part, validation_part)
        coef, intercept = ordinal_head(levels, parts, train_rows, validation_rows, (coef, intercept))
    write_head(model, coef / scale, intercept - float((coef * center / scale).sum()))
    losses = [round(value, 4) for value in history["val_loss"]]
    log.info("frozen head: C %.3g chosen by validation log loss %s", strength, losses)
    return history, strength


@dataclass(frozen=True)
class Rows:
    """Standardised features: `views` blocks of the same images, as pooled_features returns them."""

    features: np.ndarray
    views: int


def fit_regression(
    train: Rows, targets: np.ndarray, weights: np.ndarray, validation: Rows, validation_targets: np.ndarray
) -> tuple[dict[str, list[float]], float, Any]:
    """The L2 logistic regression of the strength whose validation log loss is lowest: (history, C, regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score

    history: dict[str, list[float]] = {"strength": [], "val_loss": [], "val_auc": []}
    best: tuple[float, float, LogisticRegression] | None = None
    for strength in STRENGTHS:
        head = LogisticRegression(C=strength, max_iter=2000)
        head.fit(train.features, np.tile(targets, train.views), sample_weight=np.tile(weights, train.views))
        scores = head.predict_proba(validation.features)[:, 1]
        loss = float(log_loss(validation_targets, scores, labels=[0, 1]))
        history["strength"].append(strength)
        history["val_loss"].append(loss)
        history["val_auc"].append(float(roc_auc_score(validation_targets, scores)))
        if best is None or loss < best[0]:
            best = (loss, strength, head)
    assert best is not None
    return history, best[1], best[2]


def ordinal_head(
    levels: tuple[float, ...],
    parts: tuple[DecodedSet, DecodedSet],
    train: Rows,
    validation: Rows,
    label_head: tuple[np.ndarray, float],
) -> tuple[np.ndarray, float]:
    """One regression per level (level >= each of `levels`, e.g. ICDR grade >= 1, 2, 3), their logits summed,
    then scaled on the validation part into the label's logit. The grade's order is information a yes/no
    label throws away (referable retinopathy, probe of 2026-12-04: grouped CV AUC 0.895 against 0.883).
    `label_head` is the label's own regression (its level among `levels`, fitted with the recipe's weights);
    each other level's two sides weigh alike. Still one linear head, so the network serves as before."""
    from sklearn.linear_model import LogisticRegression

    train_part, validation_part = parts
    if train_part.levels is None or validation_part.levels is None:
        raise ValueError("ordinal_levels needs labels read from a number in the manifest (the disease's 'labels')")
    infected = train_part.labels == 0
    own = [level for level in levels if np.array_equal(train_part.levels >= level, infected)]
    if not own:
        raise ValueError(f"ordinal_levels {list(levels)} must include the level the label is read from")
    coef, intercept = label_head
    for level in levels:
        if level == own[0]:
            continue
        targets = (train_part.levels >= level).astype(int)
        validation_targets = (validation_part.levels >= level).astype(int)
        if len(set(targets.tolist())) < 2 or len(set(validation_targets.tolist())) < 2:
            raise ValueError(f"ordinal level {level}: the training or validation part has images on one side only")
        weights = np.where(targets == 1, 0.5 / targets.mean(), 0.5 / (1 - targets.mean()))
        _, strength, head = fit_regression(train, targets, weights, validation, validation_targets)
        log.info("ordinal level >= %g: C %.3g", level, strength)
        coef, intercept = coef + head.coef_[0], intercept + float(head.intercept_[0])
    summed = validation.features @ coef + intercept
    fuse = LogisticRegression(C=1e6, max_iter=1000).fit(summed[:, None], (validation_part.labels == 0).astype(int))
    slope, offset = float(fuse.coef_[0, 0]), float(fuse.intercept_[0])
    return coef * slope, intercept * slope + offset


def write_head(model: keras.Model, weights: np.ndarray, bias: float) -> None:
    """Dense(2, sigmoid) answering sigmoid(z) for infected and sigmoid(-z) for uninfected, z = f . w + b."""
    head = model.layers[-1]
    kernel = np.stack([weights, -weights], axis=1).astype(np.float32)
    head.set_weights([kernel, np.array([bias, -bias], dtype=np.float32)])

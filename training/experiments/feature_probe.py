"""`python -m training feature-probe <disease>`: which frozen ImageNet features, pooled how, carry the disease.

A frozen backbone's features are computed once per image (and once for its mirror image); then each candidate
feature set (average or max pooling of the last block and of earlier stages, alone or side by side) is fitted
with a logistic regression on the same grouped folds as `cross-validate` (train on three folds, choose the
regularisation on the next, measure on the held-out one). A probe of ten feature sets costs one forward pass
per image instead of ten trainings, so the design of a frozen recipe is chosen by grouped CV, not by one test
part.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.experiments.crossval import cross_validation_pool
from training.networks.architectures import make_architecture
from training.networks.efficientnet_lite import variant_of
from training.release.train import TrainOptions

log = logging.getLogger("training")
TOP = "top_relu"
CANDIDATES = (
    ("top_avg",),
    ("top_avg", "top_max"),
    ("top_avg", "stage6_avg", "stage6_max"),
    ("top_avg", "stage5_avg", "stage5_max"),
    ("top_avg", "top_max", "stage6_max", "stage5_max"),
    ("top_avg", "top_max", "stage6_avg", "stage6_max", "stage5_avg", "stage5_max"),
    # earlier stages at their maximum: a detector of small lesions (a microaneurysm is a few pixels) fires somewhere
    ("top_avg", "stage6_avg", "stage6_max", "stage4_max"),
    ("top_avg", "stage6_avg", "stage6_max", "stage4_avg", "stage4_max"),
    ("top_avg", "stage6_avg", "stage6_max", "stage3_max", "stage4_max"),
)
STRENGTHS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


def taps(arch: str) -> dict[str, str]:
    """Where an EfficientNet-Lite's stages end (the network's input side / 8, / 16, / 16, / 32), and its head."""
    variant = variant_of(arch)
    if variant is None:
        raise ValueError(f"feature-probe reads an EfficientNet-Lite's stages; {arch} is not one")
    return {f"stage{stage}": variant.stage_end(stage) for stage in (3, 4, 5, 6)} | {"top": TOP}


def tapped_features(model: keras.Model, pixels: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Every tap's average and maximum over the image, for `pixels` (uint8) and their mirror images."""
    outputs = {name: model.get_layer(layer).output for name, layer in taps(model.name).items()}
    tapped = keras.Model(model.inputs, outputs)
    features: dict[str, list[np.ndarray]] = {}
    for mirrored in (False, True):
        for start in range(0, len(pixels), batch_size):
            batch = tf.convert_to_tensor(pixels[start : start + batch_size], tf.float32) / 255.0
            if mirrored:
                batch = tf.reverse(batch, [2])
            for name, value in tapped(batch, training=False).items():
                features.setdefault(f"{name}_avg_{int(mirrored)}", []).append(tf.reduce_mean(value, [1, 2]).numpy())
                features.setdefault(f"{name}_max_{int(mirrored)}", []).append(tf.reduce_max(value, [1, 2]).numpy())
    return {name: np.concatenate(parts).astype(np.float64) for name, parts in features.items()}


def _views(features: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    plain = np.concatenate([features[f"{name}_0"] for name in names], axis=1)
    mirrored = np.concatenate([features[f"{name}_1"] for name in names], axis=1)
    return plain, mirrored


def probe_round(plain, mirrored, infected, train, validation, evaluated) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score

    x = np.concatenate([plain[train], mirrored[train]])
    y = np.concatenate([infected[train], infected[train]])
    center, scale = x.mean(axis=0), x.std(axis=0) + 1e-6

    def score(head, rows):
        both = (
            head.predict_proba((plain[rows] - center) / scale)[:, 1]
            + head.predict_proba((mirrored[rows] - center) / scale)[:, 1]
        )
        return both / 2

    best = None
    for strength in STRENGTHS:
        head = LogisticRegression(C=strength, max_iter=3000, class_weight="balanced")
        head.fit((x - center) / scale, y)
        loss = log_loss(infected[validation], score(head, validation), labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, strength, head)
    assert best is not None
    return {"strength": best[1], "roc_auc": float(roc_auc_score(infected[evaluated], score(best[2], evaluated)))}


def feature_probe(options: TrainOptions, weights: str, folds: int = 5, report: Path | None = None) -> dict:
    config = options.config
    spec = config.spec()
    pool = cross_validation_pool(options, spec, folds)
    model = make_architecture(options.arch, spec, weights=weights)
    started = time.perf_counter()
    features = tapped_features(model, pool.pixels)
    log.info("probe features of %d images (and mirrors) in %.0f s", len(pool.pixels), time.perf_counter() - started)
    infected = (pool.labels == 0).astype(int)
    results = []
    for names in CANDIDATES:
        plain, mirrored = _views(features, names)
        rounds = [probe_round(plain, mirrored, infected, *pool.round(fold, folds)) for fold in range(folds)]
        aucs = [r["roc_auc"] for r in rounds]
        results.append(
            {
                "features": list(names),
                "width": plain.shape[1],
                "roc_auc_mean": round(float(np.mean(aucs)), 4),
                "roc_auc_sd": round(float(np.std(aucs, ddof=1)), 4),
                "rounds": rounds,
            }
        )
        log.info("%s: AUC %.3f +- %.3f", "+".join(names), np.mean(aucs), np.std(aucs, ddof=1))
    result = {
        "disease": options.disease,
        "arch": options.arch,
        "weights": weights,
        "input": list(spec.shape),
        "enhancement": spec.enhancement.value,
        "images": len(pool.samples),
        "folds": folds,
        "feature_seconds": round(time.perf_counter() - started, 1),
        "candidates": results,
    }
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result

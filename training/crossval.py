"""`python -m training cross-validate <disease> --folds 5`: how a recipe does on patients it has not seen.

The test part (the card's split) is set aside first and never looked at. The rest is cut into k
stratified folds by patient/slide group (scikit-learn's StratifiedGroupKFold; deterministic for a
seed; no group in two folds). Round i trains on the other folds but one, picks its epoch on fold
i + 1 and is measured on fold i. Recipes, input sizes and epochs are chosen by the mean over rounds.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from app.model_card import SplitSpec
from app.scoring import normalise
from training.data import Sample, check_trainable, find_samples, split_as
from training.evaluate import compute_metrics
from training.pipeline import decode_samples, decoded_from_arrays, images_only, kept_samples, pixels_of
from training.train import TrainOptions, fit_model, resolve_disease, resolve_recipe

log = logging.getLogger("training")
METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def fold_of_each(samples: list[Sample], folds: int, seed: int) -> np.ndarray:
    """Fold index per sample: stratified by class, grouped by patient, the same for the same seed."""
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group for s in samples])
    assignment = np.full(len(samples), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(samples)), labels, groups)):
        assignment[held_out] = fold
    return assignment


@dataclass(frozen=True)
class RoundResult:
    fold: int
    n_train: int
    n_validation: int
    n_evaluated: int
    best_epoch: int
    seconds: float
    metrics: dict[str, float | None]


def summarise(rounds: list[RoundResult]) -> dict[str, dict[str, float]]:
    summary = {}
    for name in METRICS:
        values = [r.metrics[name] for r in rounds if r.metrics[name] is not None]
        if values:
            summary[name] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                             else 0.0}
    return summary


def cross_validate(options: TrainOptions, folds: int = 5, report_dir: Path | None = None) -> dict[str, object]:
    config = resolve_disease(options)
    recipe = resolve_recipe(config, options)
    spec = config.spec()
    split = split_as(find_samples(options.data_dir, options.disease), SplitSpec(seed=options.seed))
    check_trainable(split)
    pool = split.train + split.validation  # everything but the test part
    decoded = decode_samples(pool, spec)
    pool = kept_samples(pool, decoded)
    pixels, labels = pixels_of(decoded), decoded.labels
    assignment = fold_of_each(pool, folds, options.seed)
    rounds: list[RoundResult] = []
    started = time.perf_counter()
    for fold in range(folds):
        evaluated, validation = assignment == fold, assignment == (fold + 1) % folds
        training = ~(evaluated | validation)
        fitted = fit_model(spec, recipe, decoded_from_arrays(pixels[training], labels[training]),
                           decoded_from_arrays(pixels[validation], labels[validation]),
                           seed=options.seed + fold, verbose=options.verbose)
        held_out = decoded_from_arrays(pixels[evaluated], labels[evaluated])
        scores = fitted.model.predict(images_only(held_out, batch_size=recipe.batch_size), verbose=0)
        metrics = compute_metrics(labels[evaluated], normalise(scores))
        rounds.append(RoundResult(
            fold=fold, n_train=int(training.sum()), n_validation=int(validation.sum()), n_evaluated=int(evaluated.sum()),
            best_epoch=fitted.best_epoch, seconds=round(fitted.seconds, 1),
            metrics={name: getattr(metrics, name) for name in METRICS},
        ))
        log.info("%s fold %d/%d: accuracy %.4f AUC %s (best epoch %d, %.0f s)", options.disease, fold + 1, folds,
                 metrics.accuracy, metrics.roc_auc, fitted.best_epoch, fitted.seconds)
    result = {
        "disease": options.disease, "folds": folds, "seed": options.seed, "arch": "paper_cnn",
        "input": list(spec.shape), "recipe": recipe.as_dict(), "images": len(pool),
        "groups": len({s.group for s in pool}), "summary": summarise(rounds), "rounds": [asdict(r) for r in rounds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{options.disease}-{recipe.name}{'-augment' if recipe.augment else ''}-{spec.height}px-{recipe.epochs}ep"
        (report_dir / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result

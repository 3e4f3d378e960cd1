"""`python -m training cross-validate <disease> --folds 5`: how a recipe does on patients it has not seen.

The test part (the card's split) is set aside first and never looked at. The rest is cut into k
stratified folds by patient/slide group (scikit-learn's StratifiedGroupKFold; deterministic for a
seed; no group in two folds). Round i trains on the other folds but one, picks its epoch on fold
i + 1 and is measured on fold i. Recipes, input sizes, architectures and epochs are chosen by the mean
over rounds. `training/experiments/compare.py` runs several architectures on the same folds.

Each round is measured twice: at 0.5, and at the screening threshold the service would answer with, chosen
on that round's validation fold exactly as an exported version chooses it (`training/release/trust.py`). The
held-out and validation scores are kept in the report, so other operating points need no retraining.
Where the recipe says an image has no left-right (or up-down) orientation, the scores of the flipped
images are kept too: test-time augmentation, measured on the same rounds without training again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from app.contract.model_card import SplitSpec
from app.contract.preprocessing import Enhancement, InputSpec
from app.contract.scoring import calibrated_probability, normalise
from training.data.config import DEFAULT_LEARNING_RATE, Recipe, samples_of
from training.data.pipeline import (
    DecodedSet,
    decode_samples,
    decoded_from_arrays,
    kept_samples,
    levels_of,
    pixels_of,
    prediction_batches,
)
from training.data.samples import DataError, Sample, check_trainable, split_as
from training.evaluation.metrics import (
    calibrated_ece_floor,
    compute_metrics,
    expected_calibration_error,
    probabilities_of,
)
from training.evaluation.prevalence import log_odds
from training.networks.fitting import FittedModel, fit_model
from training.networks.fundus_lesions import flip_invariant
from training.networks.model import Predictor, predictor
from training.networks.pretrain import pretraining_record
from training.networks.servable import flip_views
from training.release.train import (
    TrainOptions,
    fit_seed,
    resolve_recipe,
    resolve_start,
)
from training.release.trust import CALIBRATION_METHODS, DEFAULT_TARGET_SENSITIVITY, screening_threshold

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
    epochs_run: int = 0
    predict_seconds: float = 0.0  # the held-out fold, in batches
    screening_threshold: float | None = None  # chosen on the validation fold, as an export chooses it
    metrics_at_screening: dict[str, float | None] | None = None
    scores: dict[str, dict[str, list]] | None = None  # P(infected) and labels of the held-out and validation folds


def summarise(rounds: list[RoundResult], at_screening: bool = False) -> dict[str, dict[str, float]]:
    """Mean and sd over rounds of every metric, at 0.5 or at each round's screening threshold."""
    return _over_rounds([r.metrics_at_screening if at_screening else r.metrics for r in rounds])


def _over_rounds(measured: list[dict[str, float | None] | None]) -> dict[str, dict[str, float]]:
    summary = {}
    for name in METRICS:
        values = [value for m in measured if m is not None and (value := m[name]) is not None]
        if values:
            summary[name] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            }
    return summary


@dataclass(frozen=True)
class Pool:
    """Everything but the test part, decoded, with each image's fold."""

    samples: list[Sample]
    pixels: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    def round(self, fold: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, validation, evaluated) masks of round `fold`: evaluate on it, pick epochs on the next."""
        evaluated, validation = self.folds == fold, self.folds == (fold + 1) % count
        return ~(evaluated | validation), validation, evaluated

    def part(self, rows: np.ndarray) -> DecodedSet:
        """The images of a mask of rows, with their levels where the samples have them."""
        levels = levels_of(self.samples)
        return decoded_from_arrays(self.pixels[rows], self.labels[rows], None if levels is None else levels[rows])


def require_three_folds(folds: int) -> None:
    """Each round holds one fold out, validates on the next and trains on the rest: with two, nothing is left to
    train on (TensorFlow then fails on an empty part instead of saying why)."""
    if folds < 3:
        raise ValueError(f"cross-validation needs at least 3 folds (held out, validation, training), not {folds}")


def cross_validation_pool(
    options: TrainOptions, spec: InputSpec, folds: int, subset: int | None = None, per_group: int | None = None
) -> Pool:
    """The non-test part (optionally a grouped subset of about `subset` images, at most `per_group` of each
    patient) in folds."""
    require_three_folds(folds)
    split = split_as(samples_of(options.config, options.data_dir), SplitSpec(seed=options.seed))
    check_trainable(split)
    pool = split.train + split.validation  # everything but the test part
    if per_group is not None:
        pool = capped_per_group(pool, per_group, options.seed)
    if subset is not None and subset < len(pool):
        pool = grouped_subset(pool, subset, options.seed)
    decoded = decode_samples(pool, spec)
    pool = kept_samples(pool, decoded)
    return Pool(pool, pixels_of(decoded), decoded.labels, fold_of_each(pool, folds, options.seed))


def grouped_subset(samples: list[Sample], size: int, seed: int) -> list[Sample]:
    """Whole patient groups, all their images of both classes, drawn at random until about `size` images.

    Drawing groups per class instead would leave each chosen patient with one class only, and a network
    can then tell the classes apart by the patient's slide (measured on malaria: AUC ~0.5 on new patients)."""
    by_group = _by_group(samples)
    groups = sorted(by_group)
    np.random.default_rng(seed).shuffle(groups)
    chosen: list[Sample] = []
    for group in groups:
        if len(chosen) >= size:
            break
        chosen += by_group[group]
    return chosen


def _by_group(samples: list[Sample]) -> dict[str, list[Sample]]:
    by_group: dict[str, list[Sample]] = {}
    for sample in samples:
        by_group.setdefault(sample.group, []).append(sample)
    return by_group


def capped_per_group(samples: list[Sample], cap: int, seed: int) -> list[Sample]:
    """At most `cap` images of each patient group, drawn at random within the group (so its class mix stays).

    Malaria has ~140 cells a patient: a subset of whole patients would hold only a handful of them, too few
    to measure anything on new patients. Capping cells per patient spreads the same budget over many."""
    rng = np.random.default_rng(seed)
    by_group = _by_group(samples)
    kept: list[Sample] = []
    for group in sorted(by_group):
        members = by_group[group]
        chosen = sorted(rng.choice(len(members), size=min(cap, len(members)), replace=False))
        kept += [members[i] for i in chosen]
    return kept


def evaluate_round(
    options: TrainOptions, spec: InputSpec, recipe: Recipe, pool: Pool, fold: int, folds: int, start: str | None = None
) -> tuple[RoundResult, np.ndarray, np.ndarray, FittedModel]:
    """Train round `fold` -> (its result, held-out labels, held-out scores, the fitted model)."""
    training, validation, evaluated = pool.round(fold, folds)
    fitted = fit_model(
        spec,
        recipe,
        pool.part(training),
        pool.part(validation),
        seed=fit_seed(options) + fold,
        verbose=options.verbose,
        arch=options.arch,
        initial_weights=start,
    )
    predict_started = time.perf_counter()
    predict = predictor(fitted.model)
    scores = _scores(predict, pool.pixels[evaluated], recipe.batch_size)
    predict_seconds = time.perf_counter() - predict_started
    validation_scores = _scores(predict, pool.pixels[validation], recipe.batch_size)
    threshold = screening_threshold(validation_scores[:, 0], pool.labels[validation], DEFAULT_TARGET_SENSITIVITY)
    metrics = compute_metrics(pool.labels[evaluated], scores)
    at_screening = compute_metrics(pool.labels[evaluated], scores, threshold)
    result = RoundResult(
        fold=fold,
        n_train=int(training.sum()),
        n_validation=int(validation.sum()),
        n_evaluated=int(evaluated.sum()),
        best_epoch=fitted.best_epoch,
        seconds=round(fitted.seconds, 1),
        metrics={name: getattr(metrics, name) for name in METRICS},
        epochs_run=len(fitted.history.get("loss", [])),
        predict_seconds=round(predict_seconds, 3),
        screening_threshold=round(threshold, 6),
        metrics_at_screening={name: getattr(at_screening, name) for name in METRICS},
        scores={
            part: _kept(
                pool.labels[rows], kept, _flipped_scores(fitted.model, predict, pool.pixels[rows], kept, recipe)
            )
            for part, rows, kept in (("held_out", evaluated, scores), ("validation", validation, validation_scores))
        },
    )
    log.info(
        "%s %s fold %d/%d: accuracy %.4f at 0.5, %.4f at the screening threshold %.4f, AUC %s (best epoch %d, %.0f s)",
        options.disease,
        options.arch,
        fold + 1,
        folds,
        metrics.accuracy,
        at_screening.accuracy,
        threshold,
        metrics.roc_auc,
        fitted.best_epoch,
        fitted.seconds,
    )
    return result, pool.labels[evaluated], scores, fitted


def _scores(predict: Predictor, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    images = decoded_from_arrays(pixels, np.zeros(len(pixels), dtype=np.int64))
    return normalise(predict(prediction_batches(images, batch_size=batch_size)))


def recipe_flips(recipe: Recipe) -> list[str]:
    """The flips the recipe says leave an image's meaning unchanged."""
    return [
        name
        for name, allowed in (("horizontal", recipe.flip_horizontal), ("vertical", recipe.flip_vertical))
        if allowed
    ]


def _flipped_scores(
    model: keras.Model, predict: Predictor, pixels: np.ndarray, scores: np.ndarray, recipe: Recipe
) -> list[np.ndarray]:
    """Scores of every flipped view, the same views an export with these flips answers from. A flip-invariant
    network's are its `scores` of the images as they are, not computed again."""
    if flip_invariant(model):
        return [scores] * len(flip_views(recipe_flips(recipe)))
    return [
        _scores(predict, np.flip(pixels, axis=tuple(axes)), recipe.batch_size)
        for axes in flip_views(recipe_flips(recipe))
    ]


def _kept(labels: np.ndarray, scores: np.ndarray, flipped: list[np.ndarray]) -> dict[str, list]:
    """Labels and P(infected), rounded: enough to recompute any operating point, small enough to commit;
    with flips, also P(infected) averaged over the image and its flips."""
    kept = {"labels": labels.astype(int).tolist(), "infected": np.round(scores[:, 0], 5).tolist()}
    if flipped:
        averaged = np.mean([scores[:, 0]] + [f[:, 0] for f in flipped], axis=0)
        kept["infected_with_flips"] = np.round(averaged, 5).tolist()
    return kept


def measured_with(
    rounds: list[dict], key: str, target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
) -> dict[str, dict[str, dict[str, float]]]:
    """Every metric over rounds from kept scores (`infected` or `infected_with_flips`), at 0.5 and at each
    round's screening threshold for `target_sensitivity`, chosen on its validation fold."""
    at_half: list[dict[str, float | None] | None] = []
    at_screening: list[dict[str, float | None] | None] = []
    for round_ in rounds:
        held_out, validation = round_["scores"]["held_out"], round_["scores"]["validation"]
        threshold = screening_threshold(np.array(validation[key]), np.array(validation["labels"]), target_sensitivity)
        labels, infected = np.array(held_out["labels"]), np.array(held_out[key])
        for measured, cut in ((at_half, 0.5), (at_screening, threshold)):
            metrics = compute_metrics(labels, probabilities_of(infected), cut)
            measured.append({name: getattr(metrics, name) for name in METRICS})
    return {"at_0_5": _over_rounds(at_half), "at_screening": _over_rounds(at_screening)}


def calibrated_ece(rounds: list[dict], key: str, method: str) -> dict[str, Any]:
    """The calibration `method` fitted on each round's validation fold from kept scores, as an export fits it on
    its validation part, and its ECE on the round's held-out fold: per round, and over every round's answers
    together (the whole pool, so far less noisy than one test part). Each beside its floor: what a perfectly
    calibrated model answering the same would show on as many images."""
    answers, labels, per_round, floors = [], [], [], []
    for round_ in rounds:
        held_out, validation = round_["scores"]["held_out"], round_["scores"]["validation"]
        fitted = CALIBRATION_METHODS[method](log_odds(validation[key]), np.array(validation["labels"]))
        calibrated = calibrated_probability(log_odds(held_out[key]), *fitted)
        per_round.append(expected_calibration_error(calibrated, np.array(held_out["labels"])))
        floors.append(calibrated_ece_floor(calibrated))
        answers.append(calibrated)
        labels.append(np.array(held_out["labels"]))
    pooled = np.concatenate(answers)
    return {
        "method": method,
        "pooled_ece": expected_calibration_error(pooled, np.concatenate(labels)),
        "pooled_floor": calibrated_ece_floor(pooled),
        "ece": {"mean": float(np.mean(per_round)), "std": float(np.std(per_round, ddof=1)) if len(rounds) > 1 else 0.0},
        "floor": float(np.mean(floors)),
    }


def kept_rounds(report: Path, result: dict) -> list[dict]:
    """The rounds of a report with their kept scores, as `measured_with` reads them."""
    kept = json.loads((report.parent / result["scores_file"]).read_text(encoding="utf-8"))
    return [{"scores": round_} for round_ in kept]


TARGETS = (0.80, 0.85, 0.90, 0.95, 0.97, 0.98, 0.99)


def operating_points(report: Path, targets: tuple[float, ...] = TARGETS) -> list[dict[str, Any]]:
    """How the rounds would have been answered at each target sensitivity, with and without the flips the
    report measured: what a disease's screening sensitivity and test-time flips are chosen by."""
    result = json.loads(report.read_text(encoding="utf-8"))
    if "scores_file" not in result:
        raise DataError(f"{report} kept no scores; run the cross-validation again to choose an operating point")
    rounds = kept_rounds(report, result)
    flips = result.get("with_flips", {}).get("flips", [])
    rows = []
    for key, views in [("infected", [])] + ([("infected_with_flips", flips)] if flips else []):
        for target in targets:
            served = measured_with(rounds, key, target)["at_screening"]
            rows.append(
                {
                    "target_sensitivity": target,
                    "test_time_flips": views,
                    **{name: served[name] for name in ("accuracy", "sensitivity", "specificity", "roc_auc")},
                }
            )
    return rows


def cross_validate(options: TrainOptions, folds: int = 5, report_dir: Path | None = None) -> dict[str, Any]:
    require_three_folds(folds)  # before any pretraining of a start
    config = options.config
    recipe = resolve_recipe(config, options)
    spec = config.spec()
    start = resolve_start(config, recipe, options)  # pretrained without the disease's images: no fold leaks
    pool = cross_validation_pool(options, spec, folds)
    started = time.perf_counter()
    rounds = [evaluate_round(options, spec, recipe, pool, fold, folds, start)[0] for fold in range(folds)]
    result: dict[str, Any] = {
        "disease": options.disease,
        "folds": folds,
        "seed": options.seed,
        "init_seed": fit_seed(options),
        "arch": options.arch,
        "input": list(spec.shape),
        "enhancement": spec.enhancement.value,
        "recipe": recipe.as_dict(),
        "initial_weights": start or "none",
        "pretraining": pretraining_record(start),
        "images": len(pool.samples),
        "groups": len({s.group for s in pool.samples}),
        "summary": summarise(rounds),
        "screening": {
            "target_sensitivity": DEFAULT_TARGET_SENSITIVITY,
            "summary": summarise(rounds, at_screening=True),
        },
        "rounds": [asdict(r) for r in rounds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if recipe_flips(recipe):
        result["with_flips"] = {"flips": recipe_flips(recipe), **measured_with(result["rounds"], "infected_with_flips")}
    if report_dir is not None:
        write_report(result, report_dir, report_tag(options.disease, options.arch, spec, recipe, options.init_seed))
    return result


def ordinal_tag(recipe: Recipe) -> str:
    """`-ordinal1-2-3` for a head summed over levels 1, 2 and 3 (Recipe.ordinal_levels)."""
    return f"-ordinal{'-'.join(f'{level:g}' for level in recipe.ordinal_levels)}" if recipe.ordinal_levels else ""


def bits_tag(recipe: Recipe) -> str:
    """`-8bit` for a recipe trained from kernels rounded as stored at 8 bits (Recipe.kernel_bits)."""
    return "" if recipe.kernel_bits == 32 else f"-{recipe.kernel_bits}bit"


def jitter_tag(recipe: Recipe) -> str:
    """`-stain`, `-intensity` and `-aspect` for the augmentations a recipe adds to the geometric ones."""
    return (
        f"{'-stain' if recipe.stain_jitter else ''}{'-intensity' if recipe.intensity_jitter else ''}"
        f"{'-aspect' if recipe.aspect_jitter else ''}"
    )


def report_tag(disease: str, arch: str, spec: InputSpec, recipe: Recipe, init_seed: int | None = None) -> str:
    arch_part = ("" if arch == "paper_cnn" else f"-{arch}") + ("-pretrained" if recipe.pretrained_start else "")
    enhancement = "" if spec.enhancement is Enhancement.NONE else f"-{spec.enhancement}"
    learning_rate = "" if recipe.learning_rate == DEFAULT_LEARNING_RATE else f"-lr{recipe.learning_rate:g}"
    fine_tuned = f"-from-{recipe.fine_tune_from}" if recipe.fine_tune_from else ""
    return (
        f"{disease}{arch_part}{enhancement}-{recipe.name}{'-augment' if recipe.augment else ''}"
        f"{'-vflip' if recipe.flip_vertical else ''}{'-dihedral' if recipe.dihedral else ''}"
        f"{jitter_tag(recipe)}"
        f"{'-frozen' if recipe.frozen_backbone else ''}{ordinal_tag(recipe)}{bits_tag(recipe)}{fine_tuned}"
        f"-{spec.height}px-"
        f"{recipe.epochs}ep{learning_rate}{'' if init_seed is None else f'-init{init_seed}'}"
    )


def write_report(result: dict, report_dir: Path, tag: str) -> None:
    """<tag>.json to read, and the rounds' kept scores compactly beside it in <tag>.scores.json."""
    report_dir.mkdir(parents=True, exist_ok=True)
    scores = [round_.pop("scores", None) for round_ in result["rounds"]]
    result["scores_file"] = f"{tag}.scores.json"
    (report_dir / result["scores_file"]).write_text(json.dumps(scores, separators=(",", ":")) + "\n", encoding="utf-8")
    (report_dir / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for round_, kept in zip(result["rounds"], scores, strict=True):
        round_["scores"] = kept  # the caller's result stays whole

"""`python -m training cross-site <disease>`: how a recipe does at a hospital it has never seen.

Leave one site out: for each site the disease's `sites` name (a hospital, a collection, a scanner), train
the recipe on every other site (their patient groups split into training and validation parts), fit the
trust layer there as an export fits it (calibration, screening threshold, out-of-distribution statistics),
and measure on every image of the held-out site. That site's figures are the honest estimate for a new
clinic; a grouped split within the sites only says how the model does on new patients of clinics it knows.

Beside accuracy and AUC (with patient-group bootstrap intervals) each round measures what the trust layer
does at the new site: calibration error as served (after its calibration), the operating point of the screening
threshold, how many images the out-of-distribution check flags, and how well the site-shift signal (an
image's out-of-distribution distance as a percentile of the known sites' validation images) tells the new
site's images from the known sites' ones. And how much of the calibration error is the site's other share
of disease (training/evaluation/prevalence.py): the error again after moving the answers to the site's
prevalence, as estimated from its unlabelled images and as it is. Every held-out and validation image's label,
calibrated P(infected), log-odds before calibration and out-of-distribution distance (over the validation
part's OOD_QUANTILE, so 1 is the flag) are kept beside the report (`<report>.scores.json`): other corrections,
and an ensemble of several recipes' members (`ensemble-cross-site`), can be measured as served without
training again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from app.contract.model_card import views_under
from app.contract.scoring import POSITIVE, calibrated_probability
from app.contract.site_shift import SITE_SHIFT_PERCENTILE
from training.data.config import DiseaseConfig, samples_of, sites_of
from training.data.pipeline import DecodedSet, decode_samples, kept_samples, prediction_batches
from training.data.samples import DataError, Sample, manifest_notes, split_by_group
from training.evaluation.assessment import group_intervals
from training.evaluation.metrics import compute_metrics, expected_calibration_error, operating_point, probabilities_of
from training.evaluation.prevalence import estimate_prevalence, shifted_probabilities
from training.experiments.crossval import bits_tag, jitter_tag, ordinal_tag
from training.networks.architectures import PAPER_CNN
from training.networks.fitting import fit_model
from training.networks.pretrain import pretraining_record
from training.networks.servable import features_and_log_odds
from training.release.train import TrainOptions, fit_seed, resolve_recipe, resolve_start
from training.release.trust import CalibrationChoice, fit_trust

log = logging.getLogger("training")
VALIDATION_FRACTION = 0.3  # of the known sites' images, by patient group, as the paper's validation split


def site_shift_auc(own: np.ndarray, other: np.ndarray) -> float | None:
    """How well the out-of-distribution distance tells another site's images from the known sites'
    (0.5: not at all, 1: always)."""
    if len(own) == 0 or len(other) == 0:
        return None
    labels = np.r_[np.zeros(len(own)), np.ones(len(other))]
    return float(roc_auc_score(labels, np.r_[own, other]))


class ServedRule(Protocol):
    """What the service answers a site with: a calibration, a screening threshold and an OOD threshold."""

    @property
    def calibration(self) -> CalibrationChoice: ...
    @property
    def threshold(self) -> float: ...
    @property
    def ood_threshold(self) -> float: ...


@dataclass(frozen=True)
class HeldOutSite:
    site: str
    n_train: int
    n_validation: int
    n_evaluated: int
    best_epoch: int
    seconds: float
    figures: dict[str, Any]
    # Labels (0: infected), calibrated P(infected), raw log-odds and relative OOD distance of every held-out
    # image, and the same (with patient groups) of the validation part under "validation".
    scores: dict[str, Any]


def prior_shift_figures(probabilities: np.ndarray, labels: np.ndarray, calibrated_at: float) -> dict[str, float]:
    """Calibration error at the site once its answers are moved to its prevalence: estimated from the
    unlabelled images (what a clinic can do before it has labels), and as it is (the most a shift can do)."""
    site = float(np.mean(labels == POSITIVE))
    estimated = estimate_prevalence(probabilities, calibrated_at)
    return {
        "calibrated_at": calibrated_at,
        "site_prevalence": site,
        "estimated_prevalence": estimated,
        "ece_at_estimated": expected_calibration_error(
            shifted_probabilities(probabilities, calibrated_at, estimated), labels
        ),
        "ece_at_site_prevalence": expected_calibration_error(
            shifted_probabilities(probabilities, calibrated_at, site), labels
        ),
    }


def measure_site(
    labels: np.ndarray,
    groups: list[str],
    log_odds: np.ndarray,
    distances: np.ndarray,
    trust: ServedRule,
    validation_distances: np.ndarray,
    calibrated_at: float,
) -> dict[str, Any]:
    """A held-out site's figures as the service would answer there, with the trust layer of the known sites."""
    raw = calibrated_probability(log_odds, 1.0)
    calibrated = calibrated_probability(log_odds, *trust.calibration.parameters)
    at_half = compute_metrics(labels, probabilities_of(raw))
    point = operating_point(calibrated, labels, trust.threshold)
    intervals = group_intervals(labels, probabilities_of(raw), groups) if len(set(groups)) > 1 else {}
    beyond = np.quantile(validation_distances, SITE_SHIFT_PERCENTILE / 100)
    return {
        "roc_auc": at_half.roc_auc,
        "accuracy": at_half.accuracy,
        "sensitivity": at_half.sensitivity,
        "specificity": at_half.specificity,
        "intervals": intervals,
        "screening": {
            "threshold": trust.threshold,
            "sensitivity": point.sensitivity,
            "specificity": point.specificity,
            "accuracy": float(np.mean((calibrated >= trust.threshold) == (labels == 0))),
        },
        "ece": {
            "method": trust.calibration.method,
            "temperature": trust.calibration.temperature,
            "bias": trust.calibration.bias,
            "before": expected_calibration_error(raw, labels),
            "after": expected_calibration_error(calibrated, labels),
        },
        "prior_shift": prior_shift_figures(calibrated, labels, calibrated_at),
        "out_of_distribution": float(np.mean(distances > trust.ood_threshold)),
        "site_shift": {
            "percentile": SITE_SHIFT_PERCENTILE,
            "flagged": float(np.mean(distances > beyond)),
            "auc_against_known_sites": site_shift_auc(validation_distances, distances),
        },
    }


def hold_out(
    options: TrainOptions, config: DiseaseConfig, samples: list[Sample], sites: list[str], site: str
) -> HeldOutSite:
    """Train on every site but `site`, measure on all of `site`."""
    recipe = resolve_recipe(config, options)
    spec = config.spec()
    known = [s for s, where in zip(samples, sites, strict=True) if where != site]
    where = {s.path: name for s, name in zip(samples, sites, strict=True)}
    held_out = [s for s, where in zip(samples, sites, strict=True) if where == site]
    split = split_by_group(known, test_fraction=0.0, validation_fraction=VALIDATION_FRACTION, seed=options.seed)
    train_part, validation_part = decode_samples(split.train, spec), decode_samples(split.validation, spec)
    evaluated = decode_samples(held_out, spec)
    for name, part in (("training", train_part), ("validation", validation_part), ("held-out", evaluated)):
        if part.size == 0 or len(set(part.labels.tolist())) < 2:
            raise DataError(f"leaving out {site!r}: the {name} part has no images of both classes")
    fitted = fit_model(
        spec,
        recipe,
        train_part,
        validation_part,
        seed=fit_seed(options),
        verbose=options.verbose,
        arch=options.arch,
        initial_weights=resolve_start(config, recipe, options),
        strata=[where[s.path] for s in kept_samples(split.train, train_part)],
    )
    parts = {"train": train_part, "validation": validation_part, "held_out": evaluated}
    groups = {
        "validation": [s.group for s in kept_samples(split.validation, validation_part)],
        "held_out": [s.group for s in kept_samples(held_out, evaluated)],
    }
    figures, kept = _measured(fitted.model, config, recipe.batch_size, parts, groups)
    log.info(
        "%s without %s: AUC %.4f, accuracy %.4f; screening sensitivity %.3f specificity %.3f; ECE %.3f",
        options.disease,
        site,
        figures["roc_auc"] or float("nan"),
        figures["accuracy"],
        figures["screening"]["sensitivity"],
        figures["screening"]["specificity"],
        figures["ece"]["after"],
    )
    return HeldOutSite(
        site=site,
        n_train=train_part.size,
        n_validation=validation_part.size,
        n_evaluated=evaluated.size,
        best_epoch=fitted.best_epoch,
        seconds=round(fitted.seconds, 1),
        figures=figures,
        scores=kept,
    )


def _measured(
    model: keras.Model,
    config: DiseaseConfig,
    batch_size: int,
    parts: dict[str, DecodedSet],
    groups: dict[str, list[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trust layer fitted on the known sites' parts, as `train` fits it, and the held-out site measured as
    served: (its figures, the answers kept of the held-out and validation images)."""
    views = views_under(config.test_time_flips)
    batches = {name: prediction_batches(part, batch_size=batch_size, views=views) for name, part in parts.items()}
    train_part, validation_part, evaluated = parts["train"], parts["validation"], parts["held_out"]
    train_features, _ = features_and_log_odds(model, batches["train"])
    validation_features, validation_odds = features_and_log_odds(model, batches["validation"], config.test_time_flips)
    held_features, held_odds = features_and_log_odds(model, batches["held_out"], config.test_time_flips)
    trust = fit_trust(
        train_features,
        train_part.labels,
        validation_features,
        validation_odds,
        validation_part.labels,
        groups["validation"],
        target_sensitivity=config.screening_sensitivity,
    )
    held_distances, validation_distances = trust.ood.distances(held_features), trust.ood.distances(validation_features)
    figures = measure_site(
        evaluated.labels,
        groups["held_out"],
        held_odds,
        held_distances,
        trust,
        validation_distances,
        calibrated_at=float(np.mean(validation_part.labels == POSITIVE)),
    )

    def kept(labels: np.ndarray, log_odds: np.ndarray, distances: np.ndarray) -> dict[str, list]:
        return {
            "labels": labels.astype(int).tolist(),
            "probability": np.round(calibrated_probability(log_odds, *trust.calibration.parameters), 6).tolist(),
            "log_odds": np.round(log_odds, 5).tolist(),  # before calibration: what an ensemble averages
            "distance": np.round(distances / trust.ood_threshold, 5).tolist(),
        }

    validation = kept(validation_part.labels, validation_odds, validation_distances) | {"groups": groups["validation"]}
    return figures, kept(evaluated.labels, held_odds, held_distances) | {"validation": validation}


def cross_site(options: TrainOptions, report_dir: Path | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Every site (or those in `only`) held out in turn; the report is written to <report_dir>/<tag>.json."""
    config = options.config
    if not config.sites:
        raise DataError(f"{options.disease} names no sites; give it 'sites' in its disease.json")
    samples = samples_of(options.config, options.data_dir)
    sites = sites_of(samples, manifest_notes(options.data_dir, samples), config.sites)
    counts = {name: sites.count(name) for name in dict.fromkeys(sites)}
    chosen = only or list(counts)
    unknown = sorted(set(chosen) - set(counts))
    if unknown:
        raise DataError(f"no images of site(s) {unknown}; the sites are {sorted(counts)}")
    started = time.perf_counter()
    rounds = [hold_out(options, config, samples, sites, site) for site in chosen]
    spec = config.spec()
    recipe = resolve_recipe(config, options)
    start = resolve_start(config, recipe, options)
    result: dict[str, Any] = {
        "disease": options.disease,
        "method": "leave one site out",
        "seed": options.seed,
        "arch": options.arch,
        "input": list(spec.shape),
        "enhancement": spec.enhancement.value,
        "recipe": recipe.as_dict(),
        "initial_weights": start or "none",
        "pretraining": pretraining_record(start),
        "sites": counts,
        "rules": [rule.__dict__ for rule in config.sites],
        "held_out": [{k: v for k, v in round_.__dict__.items() if k != "scores"} for round_ in rounds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        arch = "" if options.arch == PAPER_CNN else f"-{options.arch}"  # another network, another report
        arch += ("-frozen" if options.frozen_backbone else "") + ("-vflip" if recipe.flip_vertical else "")
        arch += jitter_tag(recipe) + ordinal_tag(recipe) + bits_tag(recipe)
        path = report_dir / f"{options.disease}{arch}-{spec.height}px.json"
        result["report"] = str(path)
        result["scores_file"] = path.with_suffix(".scores.json").name
        scores = {round_.site: round_.scores for round_ in rounds}
        (report_dir / result["scores_file"]).write_text(
            json.dumps(scores, separators=(",", ":")) + "\n", encoding="utf-8"
        )
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


__all__ = ["cross_site"]

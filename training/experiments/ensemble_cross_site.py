"""`python -m training ensemble-cross-site <report> <report> ...`: the leave-one-site-out figures of an ensemble,
from its members' cross-site reports and no training.

Each member was trained without the site and kept its calibrated P(infected) of every held-out image; the
ensemble's answer is their mean, measured by AUC (patient-group bootstrap interval) and at 0.5. Where every
member also kept its validation part's answers and each image's log-odds before calibration and out-of-distribution
distance (over its own validation quantile, as `ensemble` scales each member's distance), the site is measured as
the ensemble serves it: the mean of the members' P(infected) before calibration, a calibration and screening
threshold fitted on that mean over the validation part, the largest of the members' distances for the
out-of-distribution and site-shift figures (of the members the served distance reads: not a lesion network's,
`fundus_lesions.distance_readers`). Older reports kept neither: then
those figures are not measured, the report says so, and the card shows them as not measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from app.contract.scoring import POSITIVE
from training.data.config import describe_disease, samples_of, sites_of
from training.data.samples import DataError, manifest_notes
from training.evaluation.assessment import group_intervals
from training.evaluation.metrics import compute_metrics, probabilities_of
from training.experiments.cross_site import measure_site
from training.experiments.ensemble import ensemble_architecture, ensemble_tag, largest_input, report_and_scores
from training.networks.fundus_lesions import distance_readers
from training.networks.servable import mean_over_views
from training.release.trust import OOD_QUANTILE, CalibrationChoice, answer_rule

METHOD = "leave one site out, each member trained without the site; "
AS_SERVED = (
    "the ensemble's answer is the mean of its members' P(infected) before calibration, with a calibration and "
    "screening threshold fitted on that mean over the members' validation parts, and the largest of the members' "
    "relative out-of-distribution distances (of the members the served distance reads: all but lesion measures)"
)
AT_HALF_ONLY = (
    "the ensemble's answer is the mean of its members' calibrated P(infected) (AUC and figures at 0.5 only: no "
    "screening threshold, calibration or site shift)"
)


@dataclass(frozen=True)
class EnsembleRule:
    """The ensemble's answer rule at a held-out site, fitted on the known sites' validation answers."""

    calibration: CalibrationChoice
    threshold: float
    ood_threshold: float


def held_out_groups(data_dir: Path, disease: str) -> dict[str, list[str]]:
    """Each site's patient groups, in the order its images were measured (the data set's order)."""
    config = describe_disease(disease, data_dir)
    samples = samples_of(config, data_dir)
    sites = sites_of(samples, manifest_notes(data_dir, samples), config.sites)
    groups: dict[str, list[str]] = {}
    for sample, site in zip(samples, sites, strict=True):
        groups.setdefault(site, []).append(sample.group)
    return groups


def mean_answer_log_odds(log_odds: list[list[float]]) -> np.ndarray:
    """Members' log-odds -> the log-odds of their mean P(infected), by the graph's own `mean_over_views`."""
    z = np.asarray(log_odds, dtype=np.float64)
    return mean_over_views(tf.constant(z.reshape(-1)), len(z)).numpy()


def _same_images(site: str, parts: list[dict], key: str = "labels") -> None:
    if any(part[key] != parts[0][key] for part in parts):
        raise DataError(f"the members measured different images of {site!r}: evaluate them on the same data")


def _site_figures(
    site: str, members: list[dict], groups: list[str], target_sensitivity: float, readers: list[bool]
) -> dict[str, Any]:
    _same_images(site, members)
    labels = np.asarray(members[0]["labels"])
    if len(groups) != len(labels):
        raise DataError(f"the members measured different images of {site!r}: evaluate them on the same data")
    if all("validation" in member and "log_odds" in member for member in members):
        return _served_figures(site, members, labels, groups, target_sensitivity, readers)
    probability = np.mean([member["probability"] for member in members], axis=0)
    metrics = compute_metrics(labels, probabilities_of(probability))
    return {
        "roc_auc": metrics.roc_auc,
        "accuracy": metrics.accuracy,
        "sensitivity": metrics.sensitivity,
        "specificity": metrics.specificity,
        "intervals": group_intervals(labels, probabilities_of(probability), groups),
    }


def _served_figures(
    site: str,
    members: list[dict],
    labels: np.ndarray,
    groups: list[str],
    target_sensitivity: float,
    readers: list[bool],
) -> dict[str, Any]:
    """The site as the ensemble serves it: the mean of the members' answers before calibration, calibrated and
    thresholded by a rule fitted on the members' validation answers; the largest distance of the members the
    distance reads (`readers`)."""
    validations = [member["validation"] for member in members]
    _same_images(site, validations)
    _same_images(site, validations, "groups")
    validation_labels = np.asarray(validations[0]["labels"])
    validation_odds = mean_answer_log_odds([part["log_odds"] for part in validations])
    calibration, threshold = answer_rule(
        validation_odds, validation_labels, validations[0]["groups"], target_sensitivity
    )
    validation_distances = np.max([part["distance"] for part, read in zip(validations, readers) if read], axis=0)
    rule = EnsembleRule(calibration, threshold, float(np.quantile(validation_distances, OOD_QUANTILE)))
    return measure_site(
        labels,
        groups,
        mean_answer_log_odds([member["log_odds"] for member in members]),
        np.max([member["distance"] for member, read in zip(members, readers) if read], axis=0),
        rule,
        validation_distances,
        calibrated_at=float(np.mean(validation_labels == POSITIVE)),
    )


def combine_cross_sites(reports: list[Path], data_dir: Path, report_dir: Path) -> tuple[dict, Path]:
    """The ensemble's cross-site report, written into `report_dir`, from its members' reports."""
    if len(reports) < 2:
        raise DataError("an ensemble's cross-site figures need the reports of at least two members")
    read = [report_and_scores(report) for report in reports]
    results = [result for result, _ in read]
    first = results[0]
    for key in ("disease", "seed", "sites", "enhancement"):
        if any(result.get(key) != first.get(key) for result in results):
            raise DataError(f"the reports differ in {key}: members must be evaluated on the same sites alike")
    groups = held_out_groups(data_dir, first["disease"])
    target_sensitivity = describe_disease(first["disease"], data_dir).screening_sensitivity
    rounds = {round_["site"]: round_ for round_ in first["held_out"]}
    architectures = [r.get("arch", "paper_cnn") for r in results]
    readers = distance_readers(architectures)
    held_out = []
    for site in rounds:
        if any(site not in kept for _, kept in read):
            raise DataError(f"not every report held out {site!r}")
        held_out.append(
            {
                "site": site,
                "n_train": rounds[site]["n_train"],
                "n_evaluated": rounds[site]["n_evaluated"],
                "best_epoch": [
                    next(r["best_epoch"] for r in result["held_out"] if r["site"] == site) for result in results
                ],
                "figures": _site_figures(
                    site, [kept[site] for _, kept in read], groups[site], target_sensitivity, readers
                ),
            }
        )
    names = [report.name.removesuffix(".json") for report in reports]
    inputs = [result["input"] for result in results]
    result = {
        "disease": first["disease"],
        "method": METHOD + (AS_SERVED if all("screening" in r["figures"] for r in held_out) else AT_HALF_ONLY),
        "seed": first["seed"],
        "arch": ensemble_architecture(architectures),
        "distance_of": [name for name, reads in zip(names, readers) if reads],
        "input": largest_input(inputs),  # what the ensemble takes
        "member_inputs": inputs,
        "enhancement": first["enhancement"],
        "member_reports": names,
        "sites": first["sites"],
        "held_out": held_out,
        "seconds": round(sum(r["seconds"] for r in results), 1),
    }
    path = report_dir / f"{ensemble_tag(first['disease'], names)}.json"
    result["report"] = str(path)
    report_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result, path

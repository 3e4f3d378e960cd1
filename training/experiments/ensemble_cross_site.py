"""`python -m training ensemble-cross-site <report> <report> ...`: the leave-one-site-out figures of an ensemble,
from its members' cross-site reports and no training.

Each member was trained without the site and kept its calibrated P(infected) of every held-out image; the
ensemble's answer is their mean, measured by AUC (patient-group bootstrap interval) and at 0.5. The members'
validation answers were not kept, so an ensemble's own screening threshold, calibration and site-shift figures
at a held-out site are not measured here: the report says so, and the card shows them as not measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.data.config import describe_disease, samples_of, sites_of
from training.data.samples import DataError, manifest_notes
from training.evaluation.assessment import group_intervals
from training.evaluation.metrics import compute_metrics, probabilities_of
from training.experiments.ensemble import ensemble_architecture, largest_input, report_and_scores

METHOD = (
    "leave one site out; the ensemble's answer is the mean of its members' calibrated P(infected), each member "
    "trained without the site (AUC and figures at 0.5 only: no screening threshold, calibration or site shift)"
)


def held_out_groups(data_dir: Path, disease: str) -> dict[str, list[str]]:
    """Each site's patient groups, in the order its images were measured (the data set's order)."""
    config = describe_disease(disease, data_dir)
    samples = samples_of(config, data_dir)
    sites = sites_of(samples, manifest_notes(data_dir, samples), config.sites)
    groups: dict[str, list[str]] = {}
    for sample, site in zip(samples, sites, strict=True):
        groups.setdefault(site, []).append(sample.group)
    return groups


def _site_figures(site: str, members: list[dict], groups: list[str]) -> dict[str, Any]:
    labels = np.asarray(members[0]["labels"])
    if any(member["labels"] != members[0]["labels"] for member in members) or len(groups) != len(labels):
        raise DataError(f"the members measured different images of {site!r}: evaluate them on the same data")
    probability = np.mean([member["probability"] for member in members], axis=0)
    metrics = compute_metrics(labels, probabilities_of(probability))
    return {
        "roc_auc": metrics.roc_auc,
        "accuracy": metrics.accuracy,
        "sensitivity": metrics.sensitivity,
        "specificity": metrics.specificity,
        "intervals": group_intervals(labels, probabilities_of(probability), groups),
    }


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
    rounds = {round_["site"]: round_ for round_ in first["held_out"]}
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
                "figures": _site_figures(site, [kept[site] for _, kept in read], groups[site]),
            }
        )
    names = [report.name.removesuffix(".json") for report in reports]
    inputs = [result["input"] for result in results]
    result = {
        "disease": first["disease"],
        "method": METHOD,
        "seed": first["seed"],
        "arch": ensemble_architecture([r.get("arch", "paper_cnn") for r in results]),
        "input": largest_input(inputs),  # what the ensemble takes
        "member_inputs": inputs,
        "enhancement": first["enhancement"],
        "member_reports": names,
        "sites": first["sites"],
        "held_out": held_out,
        "seconds": round(sum(r["seconds"] for r in results), 1),
    }
    tag = "+".join(name.removeprefix(f"{first['disease']}-") for name in names)
    path = report_dir / f"{first['disease']}-ensemble-{tag}.json"
    result["report"] = str(path)
    report_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result, path

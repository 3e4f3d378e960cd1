"""A version's figures broken down where its data set allows: per site (within the test part, and from a
leave-one-site-out report), per grade, and the validation distances behind the site-shift signal.

`python -m training record-cross-site <disease> <report>` puts a cross-site report into the card;
`python -m training evaluate <disease> --write` recomputes the rest from the test and validation parts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from app.contract.model_card import Generalisation, GradeFigure, ModelCard, SiteFigures, read_card, replace_card
from app.contract.model_store import METADATA_FILE
from app.contract.site_shift import distance_quantiles
from training.data.config import DiseaseConfig, sites_of
from training.data.samples import DataError, Sample, manifest_notes
from training.data.versions import published_version
from training.evaluation.metrics import compute_metrics, probabilities_of

SITE_FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")


def grade_figures(
    grades: list[int | None], labels: np.ndarray, calibrated: np.ndarray, threshold: float, classes: list[str]
) -> list[GradeFigure]:
    """Per grade, the share of its test images answered infected at the screening threshold."""
    figures = []
    for grade in sorted({g for g in grades if g is not None}):
        members = np.array([g == grade for g in grades])
        majority = int(np.round(np.mean(labels[members])))
        figures.append(
            GradeFigure(
                grade=grade,
                label=classes[majority],
                n_images=int(members.sum()),
                flagged_infected=float(np.mean(calibrated[members] >= threshold)),
            )
        )
    return figures


def grades_of(notes: list[str], pattern: str | None) -> list[int | None]:
    if pattern is None:
        return [None] * len(notes)
    found = [re.search(pattern, note) for note in notes]
    return [int(match.group(1)) if match else None for match in found]


def within_site(
    sites: list[str], labels: np.ndarray, uncalibrated: np.ndarray, calibrated: np.ndarray, threshold: float
) -> dict[str, dict[str, object]]:
    """Each site's test-part figures: at 0.5 uncalibrated (as the card's metrics), and at the screening threshold."""
    figures: dict[str, dict[str, object]] = {}
    for site in dict.fromkeys(sites):
        members = np.array([s == site for s in sites])
        at_half = compute_metrics(labels[members], probabilities_of(uncalibrated[members]))
        served = compute_metrics(labels[members], probabilities_of(calibrated[members]), threshold)
        figures[site] = {
            "n_images": int(members.sum()),
            **{name: getattr(at_half, name) for name in SITE_FIGURES},
            "screening": {"sensitivity": served.sensitivity, "specificity": served.specificity},
        }
    return figures


def breakdowns(
    card: ModelCard,
    config: DiseaseConfig,
    data_dir: Path,
    test: list[Sample],
    labels: np.ndarray,
    uncalibrated: np.ndarray,
    calibrated: np.ndarray,
    validation_distances: np.ndarray | None,
) -> dict[str, object]:
    """The card fields this module owns, recomputed from the test part's answers (in `test`'s order)."""
    threshold = card.screening.threshold if card.screening else 0.5
    notes = manifest_notes(data_dir, test)
    update: dict[str, object] = {
        "by_grade": grade_figures(grades_of(notes, config.grade_pattern), labels, calibrated, threshold, card.classes)
    }
    if card.out_of_distribution is not None and validation_distances is not None:
        update["out_of_distribution"] = card.out_of_distribution.model_copy(
            update={"validation_quantiles": distance_quantiles(validation_distances)}
        )
    if config.sites:
        within = within_site(sites_of(test, notes, config.sites), labels, uncalibrated, calibrated, threshold)
        previous = {site.site: site for site in card.generalisation.sites} if card.generalisation else {}
        sites = [
            SiteFigures(
                site=name,
                n_images=previous[name].n_images if name in previous else figures["n_images"],
                within=figures,
                held_out=previous[name].held_out if name in previous else None,
            )
            for name, figures in within.items()
        ]
        update["generalisation"] = (
            card.generalisation.model_copy(update={"sites": sites})
            if card.generalisation
            else Generalisation(sites=sites, seconds=0.0, report="not run yet")
        )
    return update


def record_cross_site(models_dir: Path, disease: str, report: Path, version: int | None = None) -> ModelCard:
    """Put a leave-one-site-out report into a version's card (its test part's per-site figures stay)."""
    folder = published_version(models_dir, disease, version)
    card = read_card(folder / METADATA_FILE)
    result = json.loads(report.read_text(encoding="utf-8"))
    if result.get("disease") != disease:
        raise DataError(f"{report} is about {result.get('disease')!r}, not {disease!r}")
    if (
        result.get("input") != [card.input.height, card.input.width, card.input.channels]
        or result.get("enhancement") != card.input.enhancement.value
    ):
        raise DataError(
            f"{report} measured another input ({result.get('input')}, {result.get('enhancement')}) than "
            f"version {card.version}'s; run the cross-site evaluation at its input"
        )
    previous = {site.site: site for site in card.generalisation.sites} if card.generalisation else {}
    held_out = {round_["site"]: round_ for round_ in result["held_out"]}
    sites = [
        SiteFigures(
            site=name,
            n_images=count,
            within=previous[name].within if name in previous else None,
            held_out={
                **held_out[name]["figures"],
                "n_train": held_out[name]["n_train"],
                "best_epoch": held_out[name]["best_epoch"],
            }
            if name in held_out
            else None,
        )
        for name, count in result["sites"].items()
    ]
    updated = card.model_copy(
        update={
            "generalisation": Generalisation(
                method=result.get("method", "leave one site out"),
                sites=sites,
                seconds=result["seconds"],
                report=str(report),
            )
        }
    )
    replace_card(updated, folder / METADATA_FILE)
    return updated

"""`python -m training record-crossval <disease> <report.json>`: put a cross-validation result into the card of
the version trained with that recipe, saying where the two differ (e.g. fewer epochs to fit the compute).

Cross-validation measures a recipe, not one set of weights; the card carries it so that a reader sees the
figure on unseen patients beside the test part's, and the README's table is built from the cards.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.contract.model_card import (
    UNCALIBRATED,
    CrossValidatedCalibration,
    CrossValidation,
    ModelCard,
    read_card,
    replace_card,
)
from app.contract.model_store import METADATA_FILE
from training.data.samples import DataError
from training.data.versions import published_version
from training.experiments.crossval import calibrated_ece, kept_rounds, measured_with
from training.experiments.ensemble import largest_input
from training.release.trust import target_sensitivity_of


def differences(card: ModelCard, result: dict) -> list[str]:
    """Where the cross-validated recipe, input and architecture differ from the card's model."""
    found = []
    model_shape = [card.input.height, card.input.width, card.input.channels]
    if list(result["input"]) != model_shape:
        found.append(f"input: {result['input']} vs {model_shape}")
    if result.get("enhancement", "none") != card.input.enhancement:
        found.append(f"enhancement: {result.get('enhancement', 'none')} vs {card.input.enhancement}")
    if result.get("arch", "paper_cnn") != card.training.architecture:
        found.append(f"architecture: {result.get('arch', 'paper_cnn')} vs {card.training.architecture}")
    # Only the recipe's own keys: the card's settings also hold what training measured (the selected epoch)
    # and how it ran (strategy, replicas), which are not the recipe.
    settings = card.training.settings
    for key in sorted(result["recipe"]):
        if key in settings and result["recipe"][key] != settings[key]:
            found.append(f"{key}: {result['recipe'][key]} vs {settings[key]}")
    return found


def one_input(result: dict) -> tuple[dict, list[str]]:
    """An ensemble's report whose members read different sizes, as the version that takes the largest: (the
    report with that input, the difference to say). The rounds fed each member its size straight from the file;
    the version resizes the image it takes down to the smaller members' in the graph."""
    if not any(isinstance(side, list) for side in result["input"]):
        return result, []
    enhancements = set(result["enhancement"])
    if len(enhancements) > 1:
        raise DataError(f"the members were cross-validated with different enhancements {sorted(enhancements)}")
    largest = largest_input(result["input"])
    note = (
        f"input: the members read {result['input']} straight from the file; the version takes {largest} and "
        f"resizes it to the smaller members' in the graph"
    )
    return {**result, "input": largest, "enhancement": enhancements.pop()}, [note]


def as_served(card: ModelCard, result: dict, report: Path) -> tuple[dict, dict | None]:
    """(figures at 0.5, figures at the screening threshold) of the rounds answered as this version answers:
    recomputed from the kept scores over the version's flips, at its own target sensitivity. A report
    without kept scores gives its figures as they are (and refuses a version with flips)."""
    flips = list(card.test_time_flips)
    if "scores_file" not in result:
        if flips:
            raise DataError(f"{report} kept no scores, so it cannot measure the version's test-time flips")
        return result["summary"], result.get("screening")
    if flips and result.get("with_flips", {}).get("flips") != flips:
        raise DataError(
            f"{report} measured the flips {result.get('with_flips', {}).get('flips', [])}, "
            f"the version answers over {flips}"
        )
    target = target_sensitivity_of(card)
    measured = measured_with(kept_rounds(report, result), "infected_with_flips" if flips else "infected", target)
    return measured["at_0_5"], {"target_sensitivity": target, "summary": measured["at_screening"]}


def calibration_method(card: ModelCard) -> str:
    """The method the version calibrates with: `none` where its fit left the log-odds as they were."""
    if card.calibration is None or card.calibration.parameters() == UNCALIBRATED:
        return "none"
    return card.calibration.method


def served_calibration(card: ModelCard, result: dict, report: Path) -> CrossValidatedCalibration | None:
    """The version's calibration method fitted and measured round by round from the kept scores (None without)."""
    if "scores_file" not in result:
        return None
    key = "infected_with_flips" if card.test_time_flips else "infected"
    return CrossValidatedCalibration(**calibrated_ece(kept_rounds(report, result), key, calibration_method(card)))


def record_in_card(models_dir: Path, disease: str, report: Path, version: int | None = None) -> ModelCard:
    result = json.loads(report.read_text(encoding="utf-8"))
    if result.get("disease") != disease:
        raise DataError(f"{report} is a cross-validation of {result.get('disease')!r}, not {disease!r}")
    folder = published_version(models_dir, disease, version)
    card = read_card(folder / METADATA_FILE)
    result, resized = one_input(result)
    summary, screening = as_served(card, result, report)
    recorded = CrossValidation(
        folds=result["folds"],
        seed=result["seed"],
        images=result["images"],
        groups=result["groups"],
        input=result["input"],
        enhancement=result.get("enhancement", "none"),
        architecture=result.get("arch", "paper_cnn"),
        recipe=result["recipe"],
        differences=resized + differences(card, result),
        test_time_flips=card.test_time_flips,
        summary=summary,
        screening=screening,
        calibration=served_calibration(card, result, report),
        seconds=result["seconds"],
        report=report.as_posix(),
    )
    card = card.model_copy(update={"cross_validation": recorded})
    replace_card(card, folder / METADATA_FILE)
    return card

"""A cross-validation result recorded in the card of the version trained with that recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import read_card, write_card
from app.contract.preprocessing import ColourMode, InputSpec
from tests.model_fixtures import fixture_card
from training.cli import main

SUMMARY = {"accuracy": {"mean": 0.93, "std": 0.01}, "roc_auc": {"mean": 0.98, "std": 0.005}}


def a_version(models: Path, disease: str = "malaria") -> Path:
    folder = models / disease / "3"
    folder.mkdir(parents=True)
    card = fixture_card(disease, 3, InputSpec(50, 50, ColourMode.GRAYSCALE))
    card = card.model_copy(
        update={
            "training": card.training.model_copy(
                update={
                    "recipe": "medscan",
                    "settings": {
                        "epochs": 20,
                        "batch_size": 128,
                        "selection": "lowest validation loss",
                        "strategy": "default",
                        "replicas": 1,
                    },
                }
            )
        }
    )
    write_card(card, folder / "metadata.json")
    return folder


def a_result(tmp_path: Path, **changes) -> Path:
    result = {
        "disease": "malaria",
        "folds": 5,
        "seed": 42,
        "arch": "paper_cnn",
        "input": [50, 50, 1],
        "enhancement": "none",
        "recipe": {"epochs": 12, "batch_size": 128},
        "images": 2000,
        "groups": 140,
        "summary": SUMMARY,
        "rounds": [],
        "seconds": 1700.0,
    } | changes
    path = tmp_path / "malaria-medscan-50px-12ep.json"
    path.write_text(json.dumps(result))
    return path


def test_the_card_gets_the_figures_and_says_where_the_recipe_differs(tmp_path: Path, capsys) -> None:
    folder = a_version(tmp_path / "models")
    code = main(["record-crossval", "malaria", str(a_result(tmp_path)), "--out", str(tmp_path / "models")])
    assert code == 0
    recorded = read_card(folder / "metadata.json").cross_validation
    assert recorded is not None and recorded.summary == SUMMARY and recorded.folds == 5
    # measured fields ('selection') and how training ran ('strategy') are not the recipe
    assert recorded.differences == ["epochs: 12 vs 20"]
    assert json.loads(capsys.readouterr().out)["cross_validation"]["groups"] == 140
    assert not list(folder.glob(".*"))  # no staged file left behind


def test_the_served_operating_point_is_recorded_where_the_report_measured_it(tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card

    a_version(tmp_path / "models")
    screening = {"target_sensitivity": 0.95, "summary": {"accuracy": {"mean": 0.95, "std": 0.01}}}
    recorded = record_in_card(tmp_path / "models", "malaria", a_result(tmp_path, screening=screening))
    assert recorded.cross_validation.screening.model_dump() == screening
    older = record_in_card(tmp_path / "models", "malaria", a_result(tmp_path))  # a report from before it
    assert older.cross_validation.screening is None and older.cross_validation.summary == SUMMARY


def test_input_architecture_and_enhancement_differences_are_named(tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card

    a_version(tmp_path / "models")
    report = a_result(
        tmp_path, input=[96, 96, 1], arch="resnet50", enhancement="fundus", recipe={"epochs": 20, "batch_size": 128}
    )
    recorded = record_in_card(tmp_path / "models", "malaria", report).cross_validation
    assert recorded.differences == [
        "input: [96, 96, 1] vs [50, 50, 1]",
        "enhancement: fundus vs none",
        "architecture: resnet50 vs paper_cnn",
    ]


@pytest.mark.parametrize("disease, message", [("pneumonia", "not 'pneumonia'"), ("malaria", "no version 7")])
def test_a_wrong_disease_or_version_is_refused_and_the_card_is_untouched(
    tmp_path: Path, capsys, disease, message
) -> None:
    folder = a_version(tmp_path / "models")
    before = (folder / "metadata.json").read_bytes()
    version = ["--version", "7"] if disease == "malaria" else []
    code = main(["record-crossval", disease, str(a_result(tmp_path)), "--out", str(tmp_path / "models"), *version])
    assert code != 0 and message in capsys.readouterr().err
    assert (folder / "metadata.json").read_bytes() == before


def kept_scores(rounds: int = 3, seed: int = 0) -> list[dict]:
    """Per round: validation and held-out labels with P(infected), and the same over flips (slightly better)."""
    rng = np.random.default_rng(seed)

    def part(count: int) -> dict:
        labels = rng.integers(0, 2, count)
        infected = np.clip(np.where(labels == 0, 0.7, 0.3) + rng.normal(0, 0.2, count), 0, 1)
        return {
            "labels": labels.tolist(),
            "infected": infected.round(5).tolist(),
            "infected_with_flips": np.clip(infected + np.where(labels == 0, 0.05, -0.05), 0, 1).round(5).tolist(),
        }

    return [{"held_out": part(200), "validation": part(200)} for _ in range(rounds)]


def with_kept_scores(tmp_path: Path, flips: list[str] | None = None) -> Path:
    report = a_result(tmp_path, scores_file="m.scores.json", **({"with_flips": {"flips": flips}} if flips else {}))
    (tmp_path / "m.scores.json").write_text(json.dumps(kept_scores()))
    return report


def set_card(folder: Path, **changes) -> None:
    card = read_card(folder / "metadata.json")
    screening = card.screening.model_copy(update={"target_sensitivity": changes.pop("target", 0.95)})
    write_card(card.model_copy(update={"screening": screening, **changes}), folder / "metadata.json")


def served_by_hand(rounds: list[dict], key: str, target: float) -> dict[str, float]:
    """Mean served accuracy, sensitivity, specificity over rounds, counted directly: each round's threshold is
    the score of the ceil(target * n)-th most confident infected validation image (label 0)."""
    figures: dict[str, list[float]] = {"accuracy": [], "sensitivity": [], "specificity": []}
    for round_ in rounds:
        validation, held = round_["scores"]["validation"], round_["scores"]["held_out"]
        infected = sorted((s for s, y in zip(validation[key], validation["labels"]) if y == 0), reverse=True)
        threshold = infected[int(np.ceil(target * len(infected))) - 1]
        said = np.array(held[key]) >= threshold
        truth = np.array(held["labels"]) == 0
        figures["accuracy"].append(float(np.mean(said == truth)))
        figures["sensitivity"].append(float(np.mean(said[truth])))
        figures["specificity"].append(float(np.mean(~said[~truth])))
    return {name: float(np.mean(values)) for name, values in figures.items()}


def test_figures_are_recomputed_as_the_version_answers_at_its_own_target_and_flips(tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card

    folder = a_version(tmp_path / "models")
    report = with_kept_scores(tmp_path, flips=["horizontal"])
    rounds = [{"scores": kept} for kept in kept_scores()]
    set_card(folder, target=0.98)
    plain = record_in_card(tmp_path / "models", "malaria", report).cross_validation
    assert plain.screening.target_sensitivity == 0.98 and plain.test_time_flips == []
    for name, value in served_by_hand(rounds, "infected", 0.98).items():
        assert plain.screening.summary[name]["mean"] == pytest.approx(value), name
    assert plain.summary != SUMMARY  # recomputed, not the report's own
    assert plain.screening.summary["sensitivity"]["mean"] >= 0.9

    set_card(folder, target=0.98, test_time_flips=["horizontal"])
    flipped = record_in_card(tmp_path / "models", "malaria", report).cross_validation
    assert flipped.test_time_flips == ["horizontal"]
    for name, value in served_by_hand(rounds, "infected_with_flips", 0.98).items():
        assert flipped.screening.summary[name]["mean"] == pytest.approx(value), name
    assert flipped.summary["accuracy"]["mean"] > plain.summary["accuracy"]["mean"]


@pytest.mark.parametrize(
    "report_flips, message", [(None, r"the flips \[\]"), (["horizontal", "vertical"], "answers over")]
)
def test_a_report_that_did_not_measure_the_versions_flips_is_refused(tmp_path: Path, report_flips, message) -> None:
    from training.data.samples import DataError
    from training.experiments.card_crossval import record_in_card

    folder = a_version(tmp_path / "models")
    set_card(folder, test_time_flips=["horizontal"])
    before = (folder / "metadata.json").read_bytes()
    with pytest.raises(DataError, match=message):
        record_in_card(tmp_path / "models", "malaria", with_kept_scores(tmp_path, flips=report_flips))
    with pytest.raises(DataError, match="kept no scores"):
        record_in_card(tmp_path / "models", "malaria", a_result(tmp_path))
    assert (folder / "metadata.json").read_bytes() == before


@pytest.mark.parametrize(
    "temperature, bias, method", [(1.0, 0.0, "none"), (0.7, 0.0, "temperature"), (0.7, 0.3, "platt")]
)
def test_the_versions_own_calibration_is_measured_round_by_round(tmp_path: Path, temperature, bias, method) -> None:
    from training.experiments.card_crossval import record_in_card
    from training.experiments.crossval import calibrated_ece

    folder = a_version(tmp_path / "models")
    card = read_card(folder / "metadata.json")
    calibration = card.calibration.model_copy(
        update={"temperature": temperature, "bias": bias, "method": "platt" if bias else "temperature"}
    )
    write_card(card.model_copy(update={"calibration": calibration}), folder / "metadata.json")
    recorded = record_in_card(tmp_path / "models", "malaria", with_kept_scores(tmp_path)).cross_validation
    expected = calibrated_ece([{"scores": kept} for kept in kept_scores()], "infected", method)
    assert recorded.calibration.model_dump() == expected
    assert 0 < recorded.calibration.pooled_ece < 0.5


def test_a_report_without_kept_scores_records_no_calibration(tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card

    a_version(tmp_path / "models")
    assert record_in_card(tmp_path / "models", "malaria", a_result(tmp_path)).cross_validation.calibration is None

"""A cross-validation result recorded in the card of the version trained with that recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.model_card import read_card, write_card
from app.preprocessing import ColourMode, InputSpec
from tests.model_fixtures import fixture_card
from training.cli import main

SUMMARY = {"accuracy": {"mean": 0.93, "std": 0.01}, "roc_auc": {"mean": 0.98, "std": 0.005}}


def a_version(models: Path, disease: str = "malaria") -> Path:
    folder = models / disease / "3"
    folder.mkdir(parents=True)
    card = fixture_card(disease, 3, InputSpec(50, 50, ColourMode.GRAYSCALE))
    card = card.model_copy(update={"training": card.training.model_copy(update={
        "recipe": "medscan", "settings": {"epochs": 20, "batch_size": 128, "selection": "lowest validation loss"}})})
    write_card(card, folder / "metadata.json")
    return folder


def a_result(tmp_path: Path, **changes) -> Path:
    result = {"disease": "malaria", "folds": 5, "seed": 42, "arch": "paper_cnn", "input": [50, 50, 1],
              "enhancement": "none", "recipe": {"epochs": 12, "batch_size": 128}, "images": 2000, "groups": 140,
              "summary": SUMMARY, "rounds": [], "seconds": 1700.0} | changes
    path = tmp_path / "malaria-medscan-50px-12ep.json"
    path.write_text(json.dumps(result))
    return path


def test_the_card_gets_the_figures_and_says_where_the_recipe_differs(tmp_path: Path, capsys) -> None:
    folder = a_version(tmp_path / "models")
    code = main(["record-crossval", "malaria", str(a_result(tmp_path)), "--out", str(tmp_path / "models")])
    assert code == 0
    recorded = read_card(folder / "metadata.json").cross_validation
    assert recorded is not None and recorded.summary == SUMMARY and recorded.folds == 5
    assert recorded.differences == ["epochs: 12 vs 20"]  # measured fields such as 'selection' are not recipe
    assert json.loads(capsys.readouterr().out)["cross_validation"]["groups"] == 140
    assert not list(folder.glob(".*"))  # no staged file left behind


def test_the_served_operating_point_is_recorded_where_the_report_measured_it(tmp_path: Path) -> None:
    from training.card_crossval import record_in_card

    a_version(tmp_path / "models")
    screening = {"target_sensitivity": 0.95, "summary": {"accuracy": {"mean": 0.95, "std": 0.01}}}
    recorded = record_in_card(tmp_path / "models", "malaria", a_result(tmp_path, screening=screening))
    assert recorded.cross_validation.screening.model_dump() == screening
    older = record_in_card(tmp_path / "models", "malaria", a_result(tmp_path))  # a report from before it
    assert older.cross_validation.screening is None and older.cross_validation.summary == SUMMARY


def test_input_architecture_and_enhancement_differences_are_named(tmp_path: Path) -> None:
    from training.card_crossval import record_in_card

    a_version(tmp_path / "models")
    report = a_result(tmp_path, input=[96, 96, 1], arch="resnet50", enhancement="fundus",
                      recipe={"epochs": 20, "batch_size": 128})
    recorded = record_in_card(tmp_path / "models", "malaria", report).cross_validation
    assert recorded.differences == ["input: [96, 96, 1] vs [50, 50, 1]", "enhancement: fundus vs none",
                                    "architecture: resnet50 vs paper_cnn"]


@pytest.mark.parametrize("disease, message", [("pneumonia", "not 'pneumonia'"), ("malaria", "no version 7")])
def test_a_wrong_disease_or_version_is_refused_and_the_card_is_untouched(tmp_path: Path, capsys, disease,
                                                                         message) -> None:
    folder = a_version(tmp_path / "models")
    before = (folder / "metadata.json").read_bytes()
    version = ["--version", "7"] if disease == "malaria" else []
    code = main(["record-crossval", disease, str(a_result(tmp_path)), "--out", str(tmp_path / "models"), *version])
    assert code != 0 and message in capsys.readouterr().err
    assert (folder / "metadata.json").read_bytes() == before

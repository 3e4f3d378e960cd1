"""The kept answers: written and read back exactly, refused when malformed, and the figures they give."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import FlagRate, OutOfDistribution, read_card
from tests.model_fixtures import export_untrained
from training.data.samples import DataError
from training.evaluation.answers import (
    OWN_TEST,
    AnswerSet,
    answers_path,
    figures_from_answers,
    read_answers,
    write_answers,
)
from training.evaluation.metrics import compute_metrics, probabilities_of


def own_test(log_odds: list[float], labels: list[int], distances: list[float]) -> AnswerSet:
    names = [f"malaria/{'infected' if label == 0 else 'uninfected'}/cell{i}.png" for i, label in enumerate(labels)]
    count = len(labels)
    return AnswerSet(names, np.array(log_odds), np.array(distances), np.zeros(count, bool), np.array(labels))


def test_answers_are_read_back_as_written_and_the_same_answers_make_the_same_bytes(tmp_path: Path) -> None:
    sets = {
        OWN_TEST: own_test([2.5, -1.25, 0.123456], [0, 1, 1], [0.5, 1.5, 2.75]),
        "natural photographs (skimage.data)": AnswerSet(
            ["skimage.data.cat", "skimage.data, a name with a comma"],
            np.array([0.1, -7.0]),
            np.array([9.0, 12.5]),
            np.array([True, False]),
        ),
    }
    path = tmp_path / "report" / "answers.csv.gz"
    write_answers(path, sets)
    first = path.read_bytes()
    read = read_answers(path)
    assert list(read) == list(sets)
    for name, kept in sets.items():
        assert read[name].images == kept.images
        np.testing.assert_allclose(read[name].log_odds, kept.log_odds, rtol=1e-6)
        np.testing.assert_allclose(read[name].ood_distance, kept.ood_distance, rtol=1e-7)
        assert read[name].colour_picture.tolist() == kept.colour_picture.tolist()
    assert read[OWN_TEST].labels.tolist() == [0, 1, 1] and read["natural photographs (skimage.data)"].labels is None
    write_answers(path, read)
    assert path.read_bytes() == first
    assert gzip.decompress(first).decode().splitlines()[0] == "set,image,label,log_odds,ood_distance,colour_picture"


def test_a_model_without_distances_keeps_its_answers_without_them(tmp_path: Path) -> None:
    kept = AnswerSet(["a.png"], np.array([1.0]), None, np.zeros(1, bool), np.array([0]))
    write_answers(tmp_path / "answers.csv.gz", {OWN_TEST: kept})
    assert read_answers(tmp_path / "answers.csv.gz")[OWN_TEST].ood_distance is None


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        AnswerSet(["a.png", "b.png"], np.array([1.0]), None, np.zeros(2, bool))


def test_a_version_without_kept_answers_is_named_with_the_command_that_keeps_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="evaluate --write"):
        read_answers(answers_path(tmp_path / "malaria" / "3"))


def test_figures_from_answers_are_the_test_metrics_and_the_flag_rates_at_the_cards_threshold(tmp_path: Path) -> None:
    card = read_card(export_untrained(tmp_path, "malaria") / "metadata.json")
    card = card.model_copy(
        update={
            "out_of_distribution": OutOfDistribution(
                method="a test's",
                fitted_on="nothing",
                threshold=1.0,
                threshold_quantile=0.95,
                flagged={OWN_TEST: FlagRate(n_images=0, flagged=0.0, target="<= 5%")},
            )
        }
    )
    sets = {
        OWN_TEST: own_test([3.0, 1.0, -2.0, -0.5], [0, 1, 1, 0], [0.5, 2.0, 0.2, 0.9]),
        "noise": AnswerSet(["n0", "n1"], np.array([0.0, 0.0]), np.array([0.1, 0.2]), np.array([True, False])),
    }
    figures = figures_from_answers(card, sets)
    odds = sets[OWN_TEST].log_odds
    assert figures.metrics == compute_metrics(sets[OWN_TEST].labels, probabilities_of(1 / (1 + np.exp(-odds))))
    # one of four distances above the threshold; one of two noise images a colour picture
    assert figures.flagged == {
        OWN_TEST: FlagRate(n_images=4, flagged=0.25, target="<= 5%"),
        "noise": FlagRate(n_images=2, flagged=0.5, target=""),
    }

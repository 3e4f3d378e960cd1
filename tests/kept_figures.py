"""A card's test-part figures against those recomputed from the answers its report keeps."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from app.contract.model_card import ModelCard
from training.evaluation.answers import AnswerSet, figures_from_answers

# The kept answers hold 6 significant digits: enough to move a rate or an AUC by a tie, never by more than this.
FIGURE_TOLERANCE = 1e-6


def assert_same_figures(recomputed: BaseModel, card: BaseModel, what: str) -> None:
    """Every field alike (intervals aside: the card's come from a bootstrap over patients); floats to the tolerance."""
    mine, theirs = recomputed.model_dump(exclude={"intervals"}), card.model_dump(exclude={"intervals"})
    assert mine.keys() == theirs.keys(), what
    for name, value in mine.items():
        if isinstance(value, float):
            assert value == pytest.approx(theirs[name], abs=FIGURE_TOLERANCE), f"{what}: {name}"
        else:
            assert value == theirs[name], f"{what}: {name}"


def assert_card_figures_from_answers(card: ModelCard, answers: dict[str, AnswerSet]) -> None:
    """Metrics, the screening operating point and every out-of-distribution flag rate in the card."""
    figures = figures_from_answers(card, answers)
    assert_same_figures(figures.metrics, card.metrics, "test metrics")
    assert card.screening is not None and card.screening.test is not None and figures.screening is not None
    assert_same_figures(figures.screening, card.screening.test, "screening on the test part")
    assert card.out_of_distribution is not None
    assert figures.flagged.keys() == card.out_of_distribution.flagged.keys()
    for name, rate in figures.flagged.items():
        assert_same_figures(rate, card.out_of_distribution.flagged[name], f"flagged: {name}")

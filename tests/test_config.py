from __future__ import annotations

import pytest

from app.preprocessing import ColourMode
from training.config import DISEASES, get_disease


def test_paper_recipe_is_the_papers() -> None:
    paper = get_disease("malaria").recipe("paper")
    assert (paper.epochs, paper.batch_size, paper.learning_rate) == (20, 128, 1e-3)
    assert paper.bn_momentum == 0.99 and paper.lr_schedule == "constant"
    assert not (paper.keep_best or paper.recalibrate_bn or paper.class_weights or paper.augment)


def test_every_disease_has_an_input_within_the_papers_range_and_a_colour_mode() -> None:
    assert set(DISEASES) == {"malaria", "pneumonia", "brain_tumor", "breast_cancer", "retinopathy"}
    for config in DISEASES.values():
        assert 46 <= config.image_size <= 224
        assert config.medscan.name == "medscan" and config.medscan.keep_best
    assert get_disease("malaria").colour_mode is ColourMode.GRAYSCALE  # the shipped cells are grayscale
    assert get_disease("retinopathy").colour_mode is ColourMode.RGB


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown disease 'cholera'"):
        get_disease("cholera")
    with pytest.raises(ValueError, match="unknown recipe"):
        get_disease("malaria").recipe("fast")

from __future__ import annotations

import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, Enhancement
from training.data.config import DISEASES, get_disease


def test_paper_recipe_is_the_papers() -> None:
    paper = get_disease("malaria").recipe("paper")
    assert (paper.epochs, paper.batch_size, paper.learning_rate) == (20, 128, 1e-3)
    assert paper.bn_momentum == 0.99 and paper.lr_schedule == "constant"
    assert not (paper.keep_best or paper.recalibrate_bn or paper.class_weights or paper.augment)


def test_every_disease_has_an_input_within_the_papers_range_and_a_colour_mode() -> None:
    assert set(DISEASES) == {
        "malaria", "pneumonia", "brain_tumor", "breast_cancer", "retinopathy", "referable_retinopathy"
    }  # fmt: skip
    for config in DISEASES.values():
        assert 46 <= config.image_size <= 224
        assert config.medscan.name == "medscan" and config.medscan.keep_best
    assert get_disease("malaria").colour_mode is ColourMode.RGB  # the stain's colour is the parasite
    assert get_disease("retinopathy").colour_mode is ColourMode.RGB


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown disease 'cholera'"):
        get_disease("cholera")
    with pytest.raises(ValueError, match="unknown recipe"):
        get_disease("malaria").recipe("fast")


def test_a_disease_without_defaults_is_described_by_its_file_then_flags(tmp_path) -> None:
    import json

    from tests.conftest import write_synthetic_dataset
    from training.data.config import DiseaseFlags, describe_disease

    data = write_synthetic_dataset(tmp_path, "tuberculosis", per_class=4)
    generic = describe_disease("tuberculosis", data)
    assert generic.described_by == "generic defaults" and generic.medscan.augment
    assert generic.colour_mode is ColourMode.GRAYSCALE  # the synthetic blobs are grey, saved as RGB
    (data / "tuberculosis" / "disease.json").write_text(
        json.dumps({"image_size": 72, "colour_mode": "rgb", "epochs": 7})
    )
    described = describe_disease("tuberculosis", data, DiseaseFlags(image_size=96, caveats=("flagged",)))
    assert (described.image_size, described.colour_mode, described.medscan.epochs) == (96, ColourMode.RGB, 7)
    assert described.caveats[-1] == "flagged" and "disease.json" in described.described_by
    assert described.enhancement is Enhancement.NONE
    (data / "tuberculosis" / "disease.json").write_text(json.dumps({"enhancement": "fundus"}))
    assert describe_disease("tuberculosis", data).spec().enhancement is Enhancement.FUNDUS
    assert describe_disease("tuberculosis", data, DiseaseFlags(enhancement="none")).enhancement is Enhancement.NONE
    (data / "tuberculosis" / "disease.json").write_text(json.dumps({"enhancement": "sharpen"}))
    with pytest.raises(ValueError, match="sharpen"):
        describe_disease("tuberculosis", data)
    (data / "tuberculosis" / "disease.json").write_text(json.dumps({"imgsize": 72}))
    with pytest.raises(ValueError, match="unknown keys"):
        describe_disease("tuberculosis", data)


def test_a_known_disease_keeps_its_tuned_defaults(tmp_path) -> None:
    from training.data.config import describe_disease

    assert describe_disease("malaria", tmp_path) == get_disease("malaria")


def test_the_card_records_the_enhancement_and_older_cards_read_as_none() -> None:
    from app.contract.model_card import InputCard
    from app.contract.preprocessing import InputSpec

    spec = InputSpec(96, 96, ColourMode.RGB, Enhancement.FUNDUS)
    card = InputCard.from_spec(spec)
    assert InputCard.model_validate_json(card.model_dump_json()).spec() == spec
    older = {"height": 96, "width": 96, "channels": 3, "colour_mode": "rgb"}
    assert InputCard.model_validate(older).spec().enhancement is Enhancement.NONE


def test_referable_retinopathy_reads_the_retinopathy_images_labelled_by_grade() -> None:
    referable = get_disease("referable_retinopathy")
    assert referable.images_folder == "retinopathy" and referable.labels.infected_from == 2
    assert referable.spec() == get_disease("retinopathy").spec()  # one input, one preparation
    assert [site.name for site in referable.sites] == [site.name for site in get_disease("retinopathy").sites]


@pytest.mark.parametrize("field", ["stain_jitter", "intensity_jitter", "aspect_jitter", "dihedral"])
def test_augmentation_flags_set_the_recipe_from_the_command_line(field: str) -> None:
    from training.cli import build_parser
    from training.commands.arguments import train_options
    from training.release.train import resolve_recipe

    config = get_disease("malaria")
    flag = "--" + field.replace("_", "-")
    for given, expected in ((flag, True), (flag.replace("--", "--no-"), False), (None, getattr(config.medscan, field))):
        args = build_parser().parse_args(["train", "malaria", "--data", "d", *([given] if given else [])])
        assert getattr(resolve_recipe(config, train_options(args)), field) is expected


def test_each_built_in_disease_is_a_data_file_with_its_modality() -> None:
    from app.contract.modality import Modality
    from training.data.config import DISEASES_DIR

    assert {path.stem for path in DISEASES_DIR.glob("*.json")} == set(DISEASES)
    assert all(config.modality is not Modality.OTHER for config in DISEASES.values())
    referable, any_grade = get_disease("referable_retinopathy"), get_disease("retinopathy")
    # `like`: the second Messidor-2 model shares the first's input, recipe (vertical flips too, chosen by each
    # one's grouped CV: docs/models.md, referable v5 and retinopathy v10), test-time flips and sites, and says its
    # own labels and what it changes: an ordinal head over ICDR grades 1, 2, 3 (referable v6)
    from dataclasses import replace

    assert (referable.spec(), referable.sites) == (any_grade.spec(), any_grade.sites)
    assert referable.medscan == replace(any_grade.medscan, ordinal_levels=(1.0, 2.0, 3.0))
    assert referable.medscan.flip_vertical and referable.test_time_flips == ("horizontal", "vertical")
    assert referable.test_time_flips == any_grade.test_time_flips
    assert referable.labels is not None and any_grade.labels is None and referable.paper == ("-", "-")


def test_a_labs_disease_can_start_like_a_built_in_one(tmp_path) -> None:
    import json

    from tests.conftest import write_synthetic_dataset
    from training.data.config import describe_disease

    data = write_synthetic_dataset(tmp_path, "cataract", per_class=4)
    file = data / "cataract" / "disease.json"
    file.write_text(json.dumps({"like": "retinopathy", "description": "cataract vs none", "sites": []}))
    described = describe_disease("cataract", data)
    retinopathy = get_disease("retinopathy")
    assert (described.name, described.description, described.sites) == ("cataract", "cataract vs none", ())
    assert (described.modality, described.enhancement, described.medscan) == (
        retinopathy.modality, retinopathy.enhancement, retinopathy.medscan
    )  # fmt: skip
    assert described.described_by.startswith("MedScan's retinopathy + ")
    file.write_text(json.dumps({"like": "cholera"}))
    with pytest.raises(ValueError, match="'like' names another built-in disease"):
        describe_disease("cataract", data)
    file.write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(ValueError, match="one JSON object"):
        describe_disease("cataract", data)


def test_ordinal_levels_are_read_as_numbers_and_need_a_frozen_backbone(tmp_path) -> None:
    import json

    from tests.conftest import write_synthetic_dataset
    from training.data.config import describe_disease
    from training.data.pipeline import decoded_from_arrays
    from training.networks.fitting import fit_model

    data = write_synthetic_dataset(tmp_path, "graded", per_class=4)
    (data / "graded" / "disease.json").write_text(json.dumps({"ordinal_levels": [1, 2, 3]}))
    config = describe_disease("graded", data)
    assert config.medscan.ordinal_levels == (1.0, 2.0, 3.0)
    part = decoded_from_arrays(np.zeros((4, *config.spec().shape), np.uint8), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="--frozen-backbone"):
        fit_model(config.spec(), config.medscan, part, part, seed=1)

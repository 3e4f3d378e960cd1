"""Pretraining on the other data sets: the target's images are never read, and training starts from the backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from app.contract.model_card import SplitSpec
from tests.conftest import write_synthetic_dataset
from training.data.config import DISEASES
from training.data.samples import DataError, Sample, find_samples, split_as
from training.networks.pretrain import pretraining_record

pytestmark = pytest.mark.slow  # pretrains backbones: 65 s

OTHERS = ("malaria", "pneumonia")


def non_test_part(data: Path, disease: str) -> list[Sample]:
    split = split_as(find_samples(data, disease), SplitSpec())
    return split.train + split.validation


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small data sets to pretrain on, whose test parts are unreadable, and a target whose images are all
    unreadable: any read of an image that pretraining must not see shows."""
    root = tmp_path_factory.mktemp("pretrain") / "data"
    write_synthetic_dataset(root, "malaria", per_class=20)
    write_synthetic_dataset(root, "pneumonia", per_class=12, manifest=False)
    for disease in OTHERS:
        test = split_as(find_samples(root, disease), SplitSpec()).test
        assert test  # there is a test part to hold out
        for sample in test:
            sample.path.write_bytes(b"not an image")
    for class_name in ("infected", "uninfected"):
        folder = root / "breast_cancer" / class_name
        folder.mkdir(parents=True)
        for index in range(6):
            (folder / f"broken{index}.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def backbone(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.cli import main

    out = tmp_path_factory.mktemp("backbones")
    assert (
        main(
            [
                "pretrain",
                "breast_cancer",
                "--data",
                str(data),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--per-disease",
                "30",
            ]
        )
        == 0
    )
    (path,) = out.glob("*.keras")
    return path


def test_pretraining_reads_the_other_data_sets_but_neither_the_target_nor_their_test_parts(
    backbone: Path, data: Path
) -> None:
    record = json.loads(backbone.with_suffix(".json").read_text())
    available = {disease: len(non_test_part(data, disease)) for disease in OTHERS}
    assert available["malaria"] > 30  # so the cap below is what limits it
    # capped at --per-disease, drawn at random
    assert record["pretrained_on"] == {"malaria": 30, "pneumonia": available["pneumonia"]}
    # none of the broken files (the target's, the other sets' test parts) was touched
    assert record["images"] == 30 + available["pneumonia"] and record["unreadable_skipped"] == 0
    assert record["held_out"] == "the test part of each data set (default split)"
    assert record["target"] == "breast_cancer" and record["input"] == [64, 64, 1]
    assert keras.saving.load_model(backbone).output_shape == (None, 4)  # two classes of each data set


def test_each_data_set_has_its_own_two_classes() -> None:
    from training.networks.pretrain import task_labels

    drawn = {
        "a": [Sample(Path("a0"), 0, "p"), Sample(Path("a1"), 1, "q")],
        "b": [Sample(Path("b0"), 0, "p"), Sample(Path("b1"), 1, "p")],
    }
    labelled = task_labels(drawn)
    assert [s.label for s in labelled] == [0, 1, 2, 3]
    assert {s.group for s in labelled} == {"a:p", "a:q", "b:p"}  # groups of different data sets never merge


def test_a_folder_with_only_the_target_has_nothing_to_pretrain_on(tmp_path: Path) -> None:
    from training.networks.pretrain import pretraining_samples

    data = write_synthetic_dataset(tmp_path / "data", "breast_cancer", per_class=6)
    with pytest.raises(DataError, match="no data set other than 'breast_cancer'"):
        pretraining_samples(data, "breast_cancer", per_disease=10, seed=0)


def test_the_model_starts_from_the_backbone_with_a_new_head(backbone: Path) -> None:
    from training.networks.architectures import make_architecture

    pretrained = keras.saving.load_model(backbone)
    model = make_architecture("paper_cnn", DISEASES["breast_cancer"].spec(), weights=backbone)
    for name in ("conv1", "conv4", "bn2", "dense256", "dense64"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), pretrained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("scores").output.shape[-1] == 2
    scratch = make_architecture("paper_cnn", DISEASES["breast_cancer"].spec())
    assert not np.array_equal(scratch.get_layer("conv1").get_weights()[0], model.get_layer("conv1").get_weights()[0])


def test_a_backbone_for_another_input_is_refused_with_what_to_do(backbone: Path, tmp_path: Path, capsys) -> None:
    from training.cli import main

    malaria = write_synthetic_dataset(tmp_path / "data", "malaria", per_class=12)  # readable test part this time
    code = main(
        [
            "train",
            "malaria",
            "--data",
            str(malaria),
            "--out",
            str(tmp_path / "models"),
            "--epochs",
            "1",
            "--weights",
            str(backbone),
        ]
    )
    assert code == 2
    assert "pretrained for inputs (64, 64, 1), this model takes (64, 64, 3)" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()  # nothing half-written


def test_a_file_that_is_not_a_backbone_is_refused(tmp_path: Path) -> None:
    from training.networks.architectures import make_architecture

    weights = tmp_path / "resnet.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="written by `python -m training pretrain`"):
        make_architecture("paper_cnn", DISEASES["breast_cancer"].spec(), weights=weights)


def test_cross_validation_from_a_backbone_says_what_it_was_pretrained_on(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    from training.cli import main

    target = tmp_path / "data"
    write_synthetic_dataset(target, "breast_cancer", per_class=30)  # real images for the target this time
    reports = tmp_path / "reports"
    assert (
        main(
            [
                "cross-validate",
                "breast_cancer",
                "--data",
                str(target),
                "--folds",
                "3",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--weights",
                str(backbone),
                "--report-dir",
                str(reports),
            ]
        )
        == 0
    )
    (report,) = reports.glob("breast_cancer-pretrained-*[0-9]ep.json")
    result = json.loads(report.read_text())
    assert result["initial_weights"] == str(backbone)
    assert (
        result["pretraining"]["pretrained_on"] == json.loads(backbone.with_suffix(".json").read_text())["pretrained_on"]
    )


def test_breast_cancer_starts_from_a_backbone_made_on_first_use_and_kept(data: Path, tmp_path: Path) -> None:
    from app.contract.model_card import read_card
    from training.cli import main

    target = tmp_path / "data"
    shutil.copytree(data, target)  # the same other data sets and manifest, with real target images this time
    shutil.rmtree(target / "breast_cancer")
    write_synthetic_dataset(target, "breast_cancer", per_class=30, manifest=False)
    models, backbones = tmp_path / "models", tmp_path / "backbones"
    train = [
        "train",
        "breast_cancer",
        "--data",
        str(target),
        "--out",
        str(models),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--backbones",
        str(backbones),
    ]
    assert main(train) == 0
    (backbone,) = backbones.glob("*.keras")
    made = backbone.stat().st_mtime_ns
    card = read_card(models / "breast_cancer" / "1" / "metadata.json")
    assert card.training.settings["pretrained_start"] is True
    assert card.training.settings["initial_weights"] == str(backbone)
    pretraining = card.training.settings["pretraining"]
    assert pretraining["pretrained_on"] == {disease: len(non_test_part(data, disease)) for disease in OTHERS}
    assert pretraining["unreadable_skipped"] == 0
    assert not list(backbones.glob("*partial*"))

    # A second run starts from the same backbone, not a new one; an explicit --weights none from scratch. Both
    # resolved as `train` resolves them (training again would only repeat the card's wiring checked above).
    again = start_of(target, models, backbones)
    assert again == (True, str(backbone)) and backbone.stat().st_mtime_ns == made
    assert start_of(target, models, backbones, weights="none") == (False, None)
    assert pretraining_record(None) is None and not list(backbones.glob("*partial*"))


def start_of(data: Path, models: Path, backbones: Path, **choices: str) -> tuple[bool, str | None]:
    """(recipe.pretrained_start, the weights training starts from) of a breast_cancer run with these choices."""
    from training.release.train import options_for, resolve_recipe, resolve_start

    options = options_for("breast_cancer", data, models, backbones_dir=backbones, **choices)
    recipe = resolve_recipe(options.config, options)
    return recipe.pretrained_start, resolve_start(options.config, recipe, options)


def test_a_recipe_that_needs_a_backbone_says_how_to_train_without_the_other_data_sets(tmp_path: Path, capsys) -> None:
    from training.cli import main

    data = write_synthetic_dataset(tmp_path / "data", "breast_cancer", per_class=12)
    code = main(
        [
            "train",
            "breast_cancer",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "models"),
            "--backbones",
            str(tmp_path / "backbones"),
        ]
    )
    assert code == 2
    assert "or train from scratch with --weights none" in capsys.readouterr().err
    assert not (tmp_path / "models").exists() and not (tmp_path / "backbones").exists()  # nothing half-written


def test_a_backbone_pretrained_on_the_other_test_parts_too_is_made_again(
    backbone: Path, data: Path, tmp_path: Path
) -> None:
    from training.networks.pretrain import backbone_for

    spec = DISEASES["breast_cancer"].spec()
    kept = tmp_path / "backbones"
    kept.mkdir()
    old = kept / backbone.name
    shutil.copy(backbone, old)
    record = json.loads(backbone.with_suffix(".json").read_text())
    del record["held_out"]  # as written before test parts were held out
    old.with_suffix(".json").write_text(json.dumps(record))
    before = old.stat().st_mtime_ns

    assert backbone_for("breast_cancer", data, spec, kept) == old
    assert old.stat().st_mtime_ns != before
    remade = json.loads(old.with_suffix(".json").read_text())
    assert remade["held_out"] == "the test part of each data set (default split)"
    assert remade["unreadable_skipped"] == 0

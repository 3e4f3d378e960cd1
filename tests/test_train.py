"""The whole training path on a tiny synthetic data set: split -> train -> evaluate -> export -> load -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.contract.machine import describe_machine
from app.contract.model_card import read_card
from app.contract.model_store import versions
from app.contract.savedmodel import load_model
from tests.images import model_input
from tests.kept_figures import assert_card_figures_from_answers
from training.cli import main
from training.data.config import DiseaseFlags
from training.evaluation.answers import OWN_TEST, answers_path, read_answers
from training.evaluation.run import evaluate_version
from training.release.train import options_for, train

pytestmark = pytest.mark.slow  # trains and exports models: 141 s on 2 cores

FAST = {"epochs": 2, "batch_size": 16, "verbose": 0}
SMALL = DiseaseFlags(image_size=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from tests.conftest import write_synthetic_dataset

    root = tmp_path_factory.mktemp("train")
    data = write_synthetic_dataset(root / "data", per_class=30)
    models = root / "models"
    target = train(options_for("malaria", data, models, SMALL, **FAST))
    return data, models, target


def test_export_is_a_complete_version_with_card_and_report(trained) -> None:
    data, models, target = trained
    assert target == models / "malaria" / "1"
    assert (target / "saved_model.pb").is_file() and (target / "variables").is_dir()
    card = read_card(target / "metadata.json")
    assert card.disease == "malaria" and card.version == 1
    assert card.classes == ["infected", "uninfected"]
    assert (card.input.height, card.input.width, card.input.channels) == (50, 50, 3)  # malaria is in colour
    assert card.intended_use == "research use only; not for diagnosis"
    assert card.training.seed == 42 and card.training.recipe == "medscan" and card.training.epochs_run == 2
    assert sum(card.data.counts.test.values()) == card.metrics.n_images > 0
    assert card.data.caveats and card.frameworks["tensorflow"]
    assert card.training.machine == describe_machine()  # where its training time was measured
    assert card.format_version == 2 and card.data.split_spec.seed == 42 and card.data.split_spec.test_fraction == 0.15
    # The trust layer is fitted and measured by every training run.
    assert card.calibration.temperature > 0 and card.calibration.test.n_images == card.metrics.n_images
    assert 0 < card.calibration.test.ece_floor < 0.5  # what sampling alone gives on this test part
    assert 0 <= card.screening.threshold <= 1 and card.screening.validation.sensitivity >= 0.95
    assert card.screening.test is not None and card.screening.test_at_0_5.threshold == 0.5
    assert card.screening.test.intervals is not None and set(card.screening.test.intervals) <= {
        "sensitivity",
        "specificity",
    }
    assert card.out_of_distribution.threshold > 0
    flagged = card.out_of_distribution.flagged
    assert {"own test part", "natural photographs (skimage.data)", "noise and blank images"} <= set(flagged)
    assert set(card.metrics.intervals) >= {"accuracy", "sensitivity", "specificity"}
    for name in (
        "evaluation.json",
        "classification_report.txt",
        "roc_curve.png",
        "confusion_matrix.png",
        "learning_curves.png",
        "reliability_diagram.png",
    ):
        assert (target / "report" / name).stat().st_size > 0
    report = json.loads((target / "report" / "evaluation.json").read_text())
    assert report["metrics"]["accuracy"] == card.metrics.accuracy
    assert len(report["history"]["val_loss"]) == len(report["history"]["loss"]) == 2
    # Every answer the card was measured on is kept, and gives the card's figures again.
    kept = read_answers(answers_path(target))
    assert all(image.startswith("malaria/") for image in kept[OWN_TEST].images)
    assert len(kept[OWN_TEST].images) == card.metrics.n_images and set(kept) == set(flagged)
    assert_card_figures_from_answers(card, kept)
    assert not [p for p in (models / "malaria").iterdir() if p.name.startswith(".")]
    assert target.stat().st_mode & 0o755 == 0o755  # readable by a service running as another user


def test_exported_model_predicts_like_the_card_says(trained) -> None:
    data, models, target = trained
    model = load_model(target)
    card = evaluate_version("malaria", data_dir=data, models_dir=models)
    assert card.metrics.n_images == model.card.metrics.n_images
    assert card.metrics.accuracy == pytest.approx(model.card.metrics.accuracy, abs=1e-6)
    assert card.calibration == model.card.calibration and card.screening == model.card.screening
    ood, exported = card.out_of_distribution, model.card.out_of_distribution
    assert ood.model_copy(update={"validation_quantiles": None}) == exported.model_copy(
        update={"validation_quantiles": None})  # fmt: skip
    # the site-shift quantiles again, from the served graph instead of the Keras network: float noise only
    assert ood.validation_quantiles == pytest.approx(exported.validation_quantiles, rel=1e-3)
    image = next((data / "malaria" / "infected").iterdir())
    scores = model.predict(model_input(image.read_bytes(), model.card.input.spec(), max_pixels=10**8)[np.newaxis])
    assert scores.shape == (1, 2) and np.all((scores >= 0) & (scores <= 1))


def test_a_second_run_never_overwrites_and_a_failed_export_leaves_nothing(trained, monkeypatch) -> None:
    data, models, target = trained
    before = (target / "metadata.json").read_text()
    second = train(options_for("malaria", data, models, SMALL, seed=5, **FAST))
    assert second == models / "malaria" / "2"
    assert (target / "metadata.json").read_text() == before

    import training.evaluation.assessment as assessment_module

    def failing_report(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(assessment_module, "write_report", failing_report)
    with pytest.raises(RuntimeError, match="disk full"):
        train(options_for("malaria", data, models, SMALL, **FAST))
    assert versions(models, "malaria") == [1, 2]
    assert [p.name for p in (models / "malaria").iterdir() if p.name.startswith(".")] == []


def test_the_same_seed_keeps_the_split_and_another_init_seed_trains_another_network(trained, tmp_path: Path) -> None:
    data, _, target = trained
    other = train(options_for("malaria", data, tmp_path, SMALL, init_seed=3, **FAST))
    ours, theirs = read_card(target / "metadata.json"), read_card(other / "metadata.json")
    # The same (split) seed gives the same split: only the network's start differs.
    assert theirs.data.counts == ours.data.counts and theirs.data.split_spec == ours.data.split_spec
    assert theirs.training.settings["init_seed"] == 3 and ours.training.settings["init_seed"] == 42
    # the cells themselves (random noise saturates both networks at the same answer)
    files = (
        sorted((data / "malaria" / "infected").iterdir())[:2] + sorted((data / "malaria" / "uninfected").iterdir())[:2]
    )
    images = np.stack([model_input(f.read_bytes(), ours.input.spec(), max_pixels=10**8) for f in files])
    assert not np.allclose(load_model(other).predict(images), load_model(target).predict(images))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "cholera", "--epochs", "1"], "no folder"),
        (["train", "Cholera!", "--epochs", "1"], "disease names are lower-case"),
        (["train", "pneumonia", "--epochs", "1"], "no folder"),
        (["train", "malaria", "--epochs", "1", "--image-size", "32"], "at least 46x46"),
        (["evaluate", "malaria", "--version", "9"], "no version 9 of malaria"),
        (["evaluate", "cholera"], "unknown disease 'cholera'"),
    ],
)
def test_cli_bad_input_exits_non_zero_with_a_clear_message(trained, arguments, message, capsys) -> None:
    data, models, _ = trained
    assert main([*arguments, "--data", str(data), "--out", str(models)]) == 2
    assert message in capsys.readouterr().err


def test_cli_unreadable_only_folder_is_refused(tmp_path: Path, capsys) -> None:
    for name in ("infected", "uninfected"):
        folder = tmp_path / "malaria" / name
        folder.mkdir(parents=True)
        for index in range(6):
            (folder / f"{index}.png").write_bytes(b"garbage")
    code = main(["train", "malaria", "--data", str(tmp_path), "--out", str(tmp_path / "models"), "--epochs", "1"])
    assert code == 2
    assert "no readable images" in capsys.readouterr().err
    assert not (tmp_path / "models" / "malaria").exists() or not versions(tmp_path / "models", "malaria")


def test_calibrate_gives_an_old_version_the_trust_layer_as_a_new_version_with_the_same_answers(
    trained,
    tmp_path: Path,
) -> None:
    from tests.model_fixtures import export_legacy

    data, _, _ = trained
    models = tmp_path / "models"
    old = export_legacy(models, "malaria", size=50)
    assert main(["calibrate", "malaria", "--data", str(data), "--out", str(models)]) == 0
    new = models / "malaria" / "2"
    card, old_card = read_card(new / "metadata.json"), read_card(old / "metadata.json")
    assert card.version == 2 and card.derived_from == 1 and old_card.calibration is None
    assert card.calibration is not None and card.calibration.fitted_on.startswith("validation part")
    assert card.screening is not None and card.screening.validation.sensitivity >= card.screening.target_sensitivity
    assert card.screening.test is not None and card.screening.test.threshold == card.screening.threshold
    ood = card.out_of_distribution
    assert ood is not None and ood.threshold > 0 and ood.flagged
    assert all(0 <= rate.flagged <= 1 and rate.n_images > 0 for rate in ood.flagged.values())
    probe = np.random.default_rng(1).random((5, 50, 50, 1), dtype=np.float32)
    np.testing.assert_allclose(load_model(new).predict(probe), load_model(old).predict(probe), atol=1e-6)
    assert load_model(new).can_explain and not load_model(old).can_explain
    assert (new / "report" / "reliability_diagram.png").is_file()


def test_evaluate_write_replaces_the_figures_in_place(trained, tmp_path: Path, capsys) -> None:
    import shutil

    from tests.conftest import write_synthetic_dataset

    data, models, target = trained
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    data = tmp_path / "data"  # with another organ, whose test part holds more than the 7 images asked below
    shutil.copytree(trained[0], data)
    write_synthetic_dataset(data, "pneumonia", per_class=40, manifest=False)
    card_path = copy / "malaria" / "1" / "metadata.json"
    stale = read_card(card_path).model_copy(
        update={"metrics": read_card(card_path).metrics.model_copy(update={"accuracy": 0.0})}
    )
    card_path.write_text(stale.model_dump_json())
    answers_path(copy / "malaria" / "1").unlink()  # a version measured before its answers were kept
    arguments = ["evaluate", "malaria", "--version", "1", "--write", "--data", str(data), "--out", str(copy)]
    assert main([*arguments, "--probe-limit", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (
        read_card(card_path).metrics.accuracy
        == printed["metrics"]["accuracy"]
        == read_card(target / "metadata.json").metrics.accuracy
    )
    # its answers kept now, the other organ's measured on as many images as asked, the training history kept
    rewritten, original = read_answers(answers_path(copy / "malaria" / "1")), read_answers(answers_path(target))
    assert rewritten[OWN_TEST].images == original[OWN_TEST].images
    np.testing.assert_allclose(rewritten[OWN_TEST].log_odds, original[OWN_TEST].log_odds, atol=1e-4)
    assert len(rewritten["pneumonia test part"].images) == 7 and "pneumonia test part" not in original
    report = json.loads((copy / "malaria" / "1" / "report" / "evaluation.json").read_text())
    assert len(report["history"]["loss"]) == 2


def test_a_lab_trains_and_serves_a_disease_of_its_own_without_code(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import write_synthetic_dataset
    from tests.images import blob, image_bytes

    data = write_synthetic_dataset(tmp_path / "data", "tuberculosis", per_class=30)
    (data / "tuberculosis" / "disease.json").write_text(
        json.dumps(
            {
                "description": "TB vs normal chest X-rays",
                "modality": "chest_xray",
                "image_size": 48,
                "colour_mode": "rgb",
                "augment": False,
                "caveats": ["A toy set."],
                "screening_sensitivity": 0.9,
                "test_time_flips": ["horizontal"],
            }
        )
    )
    write_synthetic_dataset(data, "malaria", per_class=30, manifest=False)  # another organ its gate must flag
    models = tmp_path / "models"
    code = main(
        [
            "train",
            "tuberculosis",
            "--data",
            str(data),
            "--out",
            str(models),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--caveat",
            "Made by a test.",
            "--enhancement",
            "fundus",
            "--probe-limit",
            "4",
        ]
    )
    assert code == 0
    card = read_card(models / "tuberculosis" / "1" / "metadata.json")
    assert (
        card.input.enhancement == "fundus"
        and "crop to the square around the eye disc's bounding box" in card.preprocessing
    )
    assert (card.input.height, card.input.channels, card.description) == (48, 3, "TB vs normal chest X-rays")
    assert card.data.caveats == ["A toy set.", "Made by a test."]
    assert card.training.settings["augment"] is False
    assert "disease.json" in card.training.settings["disease_config"]
    assert card.screening.target_sensitivity == 0.9 and card.test_time_flips == ["horizontal"]
    assert card.out_of_distribution.flagged["malaria test part"].n_images == 4  # --probe-limit of a larger part
    with TestClient(create_app(Settings(models_dir=models))) as client:
        response = client.post("/predict/tuberculosis", files={"file": ("x.png", image_bytes(blob(40, True, 1)))})
        listed = client.get("/models/tuberculosis").json()
    assert response.status_code == 200 and response.json()["disease"] == "tuberculosis"
    # its kind of image, from its data file alone, in the card the page reads it from
    assert card.modality == "chest_xray" and listed["card"]["modality"] == "chest_xray"


def test_calibrate_with_test_time_flips_makes_a_version_that_answers_for_the_image_and_its_flips(
    trained,
    tmp_path: Path,
) -> None:
    import shutil

    data, models, _ = trained
    copied = tmp_path / "models"
    shutil.copytree(models, copied)
    latest = max(versions(copied, "malaria"))  # other tests of this module may have added versions
    assert (
        main(
            ["calibrate", "malaria", "--data", str(data), "--out", str(copied)]
            + ["--test-time-flips", "horizontal", "--target-sensitivity", "0.9"]
        )
        == 0
    )
    new = copied / "malaria" / str(latest + 1)
    card = read_card(new / "metadata.json")
    assert card.test_time_flips == ["horizontal"] and card.derived_from == latest
    # trained with malaria's own flips (training/data/config.py); the new version answers over what it was told
    assert read_card(copied / "malaria" / str(latest) / "metadata.json").test_time_flips == ["horizontal", "vertical"]
    probe = np.random.default_rng(2).random((3, *card.input.spec().shape), dtype=np.float32)
    flipped = load_model(new)
    np.testing.assert_allclose(
        [o.log_odds for o in flipped.analyse(probe[:, :, ::-1])],
        [o.log_odds for o in flipped.analyse(probe)],
        atol=1e-4,
    )
    assert card.screening.target_sensitivity == 0.9
    # calibrating that version again (one calibration less to run: each costs a trust fit and an export) keeps
    # its flips and target; an empty flag takes the flips away
    assert main(["calibrate", "malaria", "--data", str(data), "--out", str(copied)]) == 0
    again = read_card(new.parent / str(int(new.name) + 1) / "metadata.json")
    assert again.test_time_flips == ["horizontal"] and again.screening.target_sensitivity == 0.9
    assert again.derived_from == int(new.name)
    assert main(["calibrate", "malaria", "--data", str(data), "--out", str(copied), "--test-time-flips"]) == 0
    assert read_card(new.parent / str(int(new.name) + 2) / "metadata.json").test_time_flips == []


def test_fitting_runs_every_epoch_and_keeps_the_one_with_the_lowest_validation_loss(trained) -> None:
    from dataclasses import replace

    from app.contract.model_card import SplitSpec
    from training.data.config import DISEASES
    from training.data.pipeline import decode_samples, evaluation_batches
    from training.data.samples import find_samples, split_as
    from training.networks.fitting import fit_model

    data, _, _ = trained
    config = DISEASES["malaria"]
    spec = config.spec()
    split = split_as(find_samples(data, "malaria"), SplitSpec())
    decoded = decode_samples(split.validation, spec)
    # Validation with its labels swapped: the better the model learns, the worse it validates, so an early epoch
    # is the best one, and a model left at its last epoch shows.
    validation = replace(
        decoded, dataset=decoded.dataset.map(lambda pixels, label: (pixels, 1 - label)), labels=1 - decoded.labels
    )
    recipe = replace(config.medscan, epochs=4, batch_size=16, augment=False)
    fitted = fit_model(spec, recipe, decode_samples(split.train, spec), validation, seed=0)
    losses = fitted.history["val_loss"]
    assert len(losses) == 4  # never stopped early
    assert fitted.best_epoch == int(np.argmin(losses)) + 1 < 4
    kept = fitted.model.evaluate(evaluation_batches(validation, batch_size=16), verbose=0, return_dict=True)
    assert kept["loss"] == pytest.approx(min(losses), rel=1e-4)  # the model is the best epoch's, BatchNorm included


def test_a_version_trained_at_8_bits_is_stored_and_described_so(trained, tmp_path: Path) -> None:
    import tensorflow as tf

    data, _, _ = trained
    target = train(options_for("malaria", data, tmp_path / "models", SMALL, kernel_bits=8, **{**FAST, "epochs": 1}))
    card = read_card(target / "metadata.json")
    assert card.kernel_bits == 8 and card.training.settings["kernel_bits"] == 8
    stored = {variable.dtype for variable in tf.saved_model.load(str(target)).weights}
    assert tf.int8 in stored
    image = np.random.default_rng(2).random((3, *card.input.spec().shape), dtype=np.float32)
    assert load_model(target).predict(image).shape == (3, 2)

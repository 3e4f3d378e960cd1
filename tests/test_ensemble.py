"""Ensembles: several published versions as one that answers their mean, and their cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import SplitSpec, read_card, write_card
from app.contract.model_store import METADATA_FILE, versions
from app.contract.preprocessing import file_pixels
from app.contract.savedmodel import load_model
from app.contract.scoring import calibrated_probability
from tests.conftest import write_synthetic_dataset
from tests.model_fixtures import export_untrained
from training.cli import main
from training.data.config import disease_samples
from training.data.samples import DataError, split_as

pytestmark = pytest.mark.slow  # exports and fits an ensemble: 24 s

PROBE = np.random.default_rng(3).random((6, 50, 50, 1), dtype=np.float32)


def p_infected(log_odds: list[float]) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(log_odds)))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Versions 1 and 2 (two different networks, same input), and version 3: their ensemble."""
    from training.experiments.ensemble import ensemble_versions

    root = tmp_path_factory.mktemp("ensemble")
    data = write_synthetic_dataset(root / "data", "malaria", per_class=30)
    models = root / "models"
    export_untrained(models, "malaria", seed=1)
    export_untrained(models, "malaria", seed=2)
    ensemble_versions("malaria", [1, 2], data_dir=data, models_dir=models)
    return data, models


def answers(models: Path, version: int) -> np.ndarray:
    return p_infected([o.log_odds for o in load_model(models / "malaria" / str(version)).analyse(PROBE)])


def test_the_ensemble_answers_the_mean_of_its_members(published) -> None:
    _, models = published
    members = (answers(models, 1) + answers(models, 2)) / 2
    assert not np.allclose(answers(models, 1), answers(models, 2), atol=1e-3)  # two different networks
    np.testing.assert_allclose(answers(models, 3), members, atol=1e-5)
    served = load_model(models / "malaria" / "3")
    np.testing.assert_allclose(served.predict(PROBE)[:, 0], members, atol=1e-5)  # serving_default too


def test_its_grad_cam_is_the_mean_of_the_members_maps(published) -> None:
    _, models = published
    maps = [load_model(models / "malaria" / str(version)).explain(PROBE) for version in (1, 2, 3)]
    assert maps[2].shape == (6, 50, 50)
    np.testing.assert_allclose(maps[2], (maps[0] + maps[1]) / 2, atol=1e-4 * float(np.abs(maps[2]).max()))


def test_its_card_names_the_members_and_has_its_own_trust_layer_and_test_figures(published) -> None:
    data, models = published
    card = read_card(models / "malaria" / "3" / METADATA_FILE)
    assert [member.version for member in card.ensemble_of] == [1, 2]
    assert card.training.architecture == "ensemble of 2 paper_cnn" and card.training.recipe == "ensemble"
    assert card.calibration is not None and card.screening is not None and card.out_of_distribution is not None
    assert card.calibration.fitted_on.startswith("validation part")
    # fitted on the ensemble's own answers, not copied from a member
    member_cards = [read_card(models / "malaria" / str(version) / METADATA_FILE) for version in (1, 2)]
    for member in member_cards:
        assert member.out_of_distribution is None or member.out_of_distribution.threshold != pytest.approx(
            card.out_of_distribution.threshold
        )
        assert member.screening is None or member.screening.threshold != card.screening.threshold
    validation = split_as(disease_samples(data, "malaria"), card.data.split_spec).validation
    pixels = np.stack([file_pixels(s.path, card.input.spec()) for s in validation]).astype(np.float32) / 255
    served = load_model(models / "malaria" / "3")
    calibrated = calibrated_probability([o.log_odds for o in served.analyse(pixels)], *card.calibration.parameters())
    infected = np.array([s.label == 0 for s in validation])
    sensitivity = float((calibrated[infected] >= card.screening.threshold).mean())
    assert sensitivity == pytest.approx(card.screening.validation.sensitivity, abs=1e-6)
    distances = np.array([o.ood_distance for o in served.analyse(pixels)])
    assert card.out_of_distribution.threshold == pytest.approx(
        np.quantile(distances, card.out_of_distribution.threshold_quantile), rel=1e-3
    )
    assert card.metrics.n_images == sum(card.data.counts.test.values())  # measured on the test part as served
    assert card.metrics.intervals  # with group-bootstrap intervals, as every version


def test_members_with_another_input_or_split_are_refused_and_nothing_is_written(published, tmp_path: Path) -> None:
    from training.experiments.ensemble import check_members

    data, models = published
    other = export_untrained(tmp_path / "models", "malaria", size=64, colour_mode="rgb")
    cards = [
        read_card(models / "malaria" / "1" / METADATA_FILE),
        read_card(other / METADATA_FILE).model_copy(update={"version": 8}),
    ]
    with pytest.raises(DataError, match="members must take the same colour mode, enhancement and aspect ratio"):
        check_members(cards)
    wide = cards[0].model_copy(update={"version": 10, "input": cards[0].input.model_copy(update={"width": 100})})
    with pytest.raises(DataError, match="aspect ratio"):
        check_members([cards[0], wide])
    resplit = cards[0].model_copy(
        update={"version": 9, "data": cards[0].data.model_copy(update={"split_spec": SplitSpec(seed=7)})}
    )
    with pytest.raises(DataError, match="trained on different splits"):
        check_members([cards[0], resplit])
    with pytest.raises(DataError, match="listed twice"):
        check_members([cards[0], cards[0]])
    before = versions(models, "malaria")
    assert main(["ensemble", "malaria", "--data", str(data), "--out", str(models), "--members", "1"]) == 2
    assert versions(models, "malaria") == before


def test_an_ensemble_is_re_exported_as_a_new_version_that_answers_as_it_does(published, tmp_path: Path) -> None:
    """`calibrate` on an ensemble: its networks rebuilt, exported with the graph the code builds today, each keeping
    its vote; the card still names its members."""
    import shutil

    published_data, published_models = published
    models, data = tmp_path / "models", tmp_path / "data"
    shutil.copytree(published_models, models)  # the module's versions and images stay as they are
    shutil.copytree(published_data, data)
    write_synthetic_dataset(data, "brain_tumor", per_class=40, manifest=False)  # another organ to flag
    arguments = ["calibrate", "malaria", "--data", str(data), "--out", str(models), "--version", "3"]
    assert main([*arguments, "--probe-limit", "5"]) == 0
    new = max(versions(models, "malaria"))
    np.testing.assert_allclose(answers(models, new), answers(models, 3), atol=1e-5)
    card = read_card(models / "malaria" / str(new) / METADATA_FILE)
    assert card.derived_from == 3 and [member.version for member in card.ensemble_of] == [1, 2]
    assert card.out_of_distribution.flagged["brain_tumor test part"].n_images == 5  # its test part holds more


def test_an_ensembles_networks_join_a_new_one_each_with_its_own_vote(tmp_path: Path, capsys) -> None:
    """Kernels at 8 bits all the way: stored again at 8 bits, a kernel read back from 8 bits is the same kernel."""
    from training.experiments.ensemble import ensemble_versions

    data = write_synthetic_dataset(tmp_path / "data", "malaria", per_class=30)
    models = tmp_path / "models"
    for seed in (1, 2, 4):
        export_untrained(models, "malaria", seed=seed, kernel_bits=8)  # versions 1, 2, 3
    ensemble_versions("malaria", [1, 2], data_dir=data, models_dir=models, kernel_bits=8)  # version 4
    ensemble_versions("malaria", [4, 3], data_dir=data, models_dir=models, kernel_bits=8)  # version 5
    three = (answers(models, 1) + answers(models, 2) + answers(models, 3)) / 3
    np.testing.assert_allclose(answers(models, 5), three, atol=1e-5)  # not (ensemble + network) / 2
    assert not np.allclose(answers(models, 5), (answers(models, 4) + answers(models, 3)) / 2, atol=1e-4)
    card = read_card(models / "malaria" / "5" / METADATA_FILE)
    assert [member.version for member in card.ensemble_of] == [1, 2, 3] and card.kernel_bits == 8
    # a network of the ensemble given again would vote twice: refused, nothing written
    assert main(["ensemble", "malaria", "--data", str(data), "--out", str(models), "--members", "4", "1"]) == 2
    assert "network of version 1 is among the members more than once" in capsys.readouterr().err
    assert versions(models, "malaria") == [1, 2, 3, 4, 5]


def test_an_ensemble_whose_weights_do_not_fit_its_members_networks_is_refused(published, tmp_path: Path) -> None:
    """Matched by place, each weight is still checked by path and shape: a card naming another architecture fails."""
    import shutil

    from training.release.calibrate import rebuilt_ensemble

    _, models = published
    copy = tmp_path / "3"
    shutil.copytree(models / "malaria" / "3", copy)
    card = read_card(copy / METADATA_FILE)
    wrong = [member.model_copy(update={"architecture": "mobilenet_v2"}) for member in card.ensemble_of]
    write_card(card.model_copy(update={"ensemble_of": wrong}), copy / METADATA_FILE)
    with pytest.raises(ValueError, match="saved weight 0 is"):
        rebuilt_ensemble(copy)


def write_crossval(folder: Path, name: str, held_out: list[list[float]], labels: list[list[int]]) -> Path:
    """A cross-validation report with kept scores, as `cross-validate` writes it (validation = held-out here)."""
    rounds = [
        {"held_out": {"labels": y, "infected": p}, "validation": {"labels": y, "infected": p}}
        for p, y in zip(held_out, labels)
    ]
    (folder / f"{name}.scores.json").write_text(json.dumps(rounds))
    report = {
        "disease": "malaria",
        "folds": len(rounds),
        "seed": 42,
        "arch": "paper_cnn",
        "input": [50, 50, 1],
        "enhancement": "none",
        "recipe": {"name": name},
        "images": 8,
        "groups": 8,
        "seconds": 10.0,
        "scores_file": f"{name}.scores.json",
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def test_cross_validation_of_an_ensemble_averages_the_kept_scores_round_by_round(published, tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card
    from training.experiments.ensemble import combine_crossvalidations

    labels = [[0, 0, 1, 1], [0, 1, 0, 1]]
    first = write_crossval(tmp_path, "malaria-a", [[0.9, 0.4, 0.6, 0.1], [0.8, 0.2, 0.3, 0.1]], labels)
    second = write_crossval(tmp_path, "malaria-b", [[0.7, 0.8, 0.2, 0.3], [0.6, 0.4, 0.1, 0.5]], labels)
    result, written = combine_crossvalidations([first, second], tmp_path)
    kept = json.loads((tmp_path / result["scores_file"]).read_text())
    assert kept[0]["held_out"]["infected"] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert kept[1]["held_out"]["infected"] == pytest.approx([0.7, 0.3, 0.2, 0.3])
    # Round 1: every infected above 0.5 and every uninfected below; round 2: 3 of 4 right at 0.5.
    assert result["summary"]["accuracy"]["mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert result["seconds"] == 20.0 and written.name == "malaria-ensemble-a+b.json"

    _, models = published
    card = record_in_card(models, "malaria", written, version=3)
    assert card.cross_validation.architecture == "ensemble of 2 paper_cnn"
    assert card.cross_validation.differences == []  # it measured what version 3 is


def test_reports_of_other_folds_do_not_combine(tmp_path: Path) -> None:
    from training.experiments.ensemble import combine_crossvalidations

    first = write_crossval(tmp_path, "malaria-a", [[0.9, 0.1]], [[0, 1]])
    second = write_crossval(tmp_path, "malaria-b", [[0.9, 0.1]], [[1, 0]])
    with pytest.raises(DataError, match="differs between the reports"):
        combine_crossvalidations([first, second], tmp_path)
    assert not list(tmp_path.glob("*ensemble*"))


def test_members_with_long_report_names_give_a_report_whose_name_a_file_system_takes(tmp_path: Path) -> None:
    from training.experiments.ensemble import combine_crossvalidations

    labels = [[0, 0, 1, 1]]
    long = "-disc-medscan-augment-vflip-frozen-ordinal1-2-3-448px-30ep"  # as the fundus recipes' names run
    members = [
        write_crossval(tmp_path, f"malaria-{arch}{long}", [[0.9, 0.4, 0.6, 0.1]], labels)
        for arch in ("efficientnet_lite0_stages", "efficientnet_lite2_stages", "fundus_lesions")
    ]
    result, written = combine_crossvalidations(members, tmp_path)
    assert written.exists() and len(written.name) <= 255 and len(result["scores_file"]) <= 255
    assert written.name.startswith("malaria-ensemble-efficientnet_lite0_stages")
    assert result["recipe"]["member_reports"] == [path.stem for path in members]  # named in full inside
    again, _ = combine_crossvalidations(members[::-1], tmp_path / "other")
    assert again["scores_file"] != result["scores_file"]  # shortened names stay apart


def test_recipes_of_different_inputs_combine_each_over_its_own_flips(published, tmp_path: Path) -> None:
    from training.experiments.card_crossval import record_in_card
    from training.experiments.ensemble import combine_crossvalidations

    labels = [[0, 0, 1, 1], [0, 1, 0, 1]]
    first = write_crossval(tmp_path, "malaria-a", [[0.9, 0.4, 0.6, 0.1], [0.8, 0.2, 0.3, 0.1]], labels)
    second = write_crossval(tmp_path, "malaria-b", [[0.7, 0.8, 0.2, 0.3], [0.6, 0.4, 0.1, 0.5]], labels)
    for path, side, flips, flipped in ((first, 32, ["horizontal"], 0.2), (second, 64, ["horizontal", "vertical"], 0.4)):
        report = json.loads(path.read_text())
        report.update(input=[side, side, 3], with_flips={"flips": flips})
        path.write_text(json.dumps(report))
        scores = path.with_suffix(".scores.json")
        rounds = json.loads(scores.read_text())
        for round_ in rounds:
            for part in ("held_out", "validation"):
                round_[part]["infected_with_flips"] = [flipped] * 4
        scores.write_text(json.dumps(rounds))
    result, written = combine_crossvalidations([first, second], tmp_path)
    assert result["input"] == [[32, 32, 3], [64, 64, 3]] and result["enhancement"] == ["none", "none"]
    assert result["with_flips"]["member_flips"] == [["horizontal"], ["horizontal", "vertical"]]
    kept = json.loads((tmp_path / result["scores_file"]).read_text())
    assert kept[0]["held_out"]["infected_with_flips"] == pytest.approx([0.3] * 4)  # each member as it answers

    _, models = published
    card = record_in_card(models, "malaria", written, version=3)
    assert card.cross_validation.input == [64, 64, 3]  # the largest member's, which such an ensemble takes
    assert card.cross_validation.differences[0].startswith("input: the members read [[32, 32, 3], [64, 64, 3]]")


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 reads 48 px, version 2 96 px; version 3 is their ensemble, kernels stored at 16 bits."""
    from training.experiments.ensemble import ensemble_versions

    root = tmp_path_factory.mktemp("two-sizes")
    data = write_synthetic_dataset(root / "data", "malaria", per_class=30)
    models = root / "models"
    export_untrained(models, "malaria", size=48, seed=1)
    export_untrained(models, "malaria", size=96, seed=2)
    ensemble_versions("malaria", [1, 2], data_dir=data, models_dir=models, kernel_bits=16)
    return models


def test_members_of_different_sizes_each_read_the_image_at_their_own(two_sizes: Path) -> None:
    import tensorflow as tf

    from training.networks.servable import round_kernels
    from training.release.calibrate import rebuilt_network

    card = read_card(two_sizes / "malaria" / "3" / METADATA_FILE)
    assert (card.input.height, card.input.width) == (96, 96)  # the largest member's input, never resized up
    assert [member.input for member in card.ensemble_of] == [[48, 48, 1], [96, 96, 1]]
    image = np.random.default_rng(5).random((4, 96, 96, 1), dtype=np.float32)
    small, large = (rebuilt_network(two_sizes / "malaria" / str(version))[0] for version in (1, 2))
    round_kernels([small, large], 16)  # as the ensemble stores them
    resized = tf.image.resize(image, (48, 48), method="bilinear", antialias=True).numpy()
    expected = (p_of(small, resized) + p_of(large, image)) / 2
    served = load_model(two_sizes / "malaria" / "3")
    np.testing.assert_allclose(p_infected([o.log_odds for o in served.analyse(image)]), expected, atol=1e-5)
    assert served.explain(image).shape == (4, 96, 96)


def p_of(model, images: np.ndarray) -> np.ndarray:
    scores = model(images, training=False).numpy()
    return scores[:, 0] / scores.sum(axis=1)


def test_kernels_at_16_bits_halve_the_size_and_come_back_as_float32(two_sizes: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    from training.release.calibrate import rebuilt_network

    stored = tf.saved_model.load(str(two_sizes / "malaria" / "3")).weights
    kernels = [variable for variable in stored if len(variable.shape) >= 2 and "ood_distance" not in variable.name]
    full = [variable for variable in kernels if variable.dtype != tf.float16]
    assert len(kernels) > 2 and len(full) == 2  # every kernel but the members' heads (Dense(2): few bytes)
    assert all(variable.dtype == tf.float32 and variable.shape[-1] == 2 for variable in full)
    assert tf.float16 not in {variable.dtype for variable in stored if len(variable.shape) < 2}  # biases, BN

    def size(version: int) -> int:
        return sum(f.stat().st_size for f in (two_sizes / "malaria" / str(version) / "variables").iterdir())

    # the members' kernels at half the bytes (at 32 bits the ensemble outweighs its members: the out-of-distribution
    # statistics of both members' features side by side are larger than each member's own)
    assert size(3) < 0.7 * (size(1) + size(2))
    assert read_card(two_sizes / "malaria" / "3" / METADATA_FILE).kernel_bits == 16
    # a one-network version stored so is rebuilt in float32 and answers as exported (checked within 1e-4)
    halved = export_untrained(tmp_path / "models", "malaria", kernel_bits=16)
    model, _ = rebuilt_network(halved)
    assert {variable.dtype for variable in model.variables if len(variable.shape) >= 2} == {"float32"}


def test_a_member_resized_in_the_graph_sees_what_the_service_resize_gives(tmp_path: Path) -> None:
    """The skew of resizing twice (file -> 64 by the service, 64 -> 32 in the graph) against once (file -> 32)."""
    import tensorflow as tf
    from PIL import Image

    from app.contract.preprocessing import ColourMode, InputSpec

    rows, columns = np.mgrid[0:300, 0:400]
    smooth = 128 + 60 * np.sin(rows / 17) * np.cos(columns / 23) + np.random.default_rng(0).normal(0, 20, rows.shape)
    path = tmp_path / "tissue.png"
    Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(path)
    once = file_pixels(path, InputSpec(height=32, width=32, colour_mode=ColourMode.GRAYSCALE)) / 255
    at_64 = file_pixels(path, InputSpec(height=64, width=64, colour_mode=ColourMode.GRAYSCALE)) / 255
    twice = tf.image.resize(at_64[np.newaxis].astype(np.float32), (32, 32), method="bilinear", antialias=True)
    assert np.abs(twice.numpy()[0] - once).mean() < 1.5 / 255


def test_its_distance_is_the_largest_of_the_members_own_each_over_its_validation_quantile(two_sizes: Path) -> None:
    """Flagged where any member finds the image unlike its training data; the graph's layer computes what numpy
    does. (On breast_cancer v8, docs/models.md, it lifted brain MRI flagged from 93% to the CNN's own 99.9%.)"""
    from training.networks.servable import MemberwiseDistance
    from training.release.trust import OOD_QUANTILE, fit_memberwise_ood

    rng = np.random.default_rng(0)
    train, validation = rng.normal(size=(400, 43)), rng.normal(size=(200, 43))
    ood = fit_memberwise_ood(train, np.arange(400) % 2, validation, [3, 40])
    small, _ = np.split(validation, [3], axis=1)
    assert ood.scales[0] == pytest.approx(np.quantile(ood.members[0].distances(small), OOD_QUANTILE))
    odd = validation[:20].copy()
    odd[:, :3] += 5.0  # unlike in the small member's 3 features only
    threshold = np.quantile(ood.distances(validation), OOD_QUANTILE)
    assert (ood.distances(odd) > threshold).all()
    layer = MemberwiseDistance(ood, name="ood_distance")
    np.testing.assert_allclose(layer(odd.astype(np.float32)).numpy(), ood.distances(odd), rtol=1e-4)
    card = read_card(two_sizes / "malaria" / "3" / METADATA_FILE)
    assert "the largest of them" in card.out_of_distribution.method


def test_the_card_says_which_members_the_distance_skips() -> None:
    from types import SimpleNamespace

    from app.contract.preprocessing import ColourMode, InputSpec
    from training.networks.architectures import FUNDUS_LESIONS, make_architecture
    from training.networks.model import make_model
    from training.release.publish import MEMBERWISE_METHOD, UNREAD_MEMBERS_METHOD, ood_method

    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    learnt, lesions = make_model(spec), make_architecture(FUNDUS_LESIONS, spec)
    one_distance = SimpleNamespace(ood=None)  # one network's statistics, not MemberwiseOod
    assert ood_method([learnt, lesions], one_distance).endswith(UNREAD_MEMBERS_METHOD)
    assert UNREAD_MEMBERS_METHOD not in ood_method([learnt, make_model(spec)], one_distance)
    assert MEMBERWISE_METHOD not in ood_method(learnt, one_distance)

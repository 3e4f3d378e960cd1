"""Cross-validation: folds grouped by patient, stratified by class, deterministic; the test part untouched."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np
import pytest

from app.contract.model_card import SplitSpec
from tests.conftest import write_synthetic_dataset
from training.data.samples import Sample, find_samples, split_as
from training.experiments.crossval import fold_of_each

pytestmark = pytest.mark.slow  # trains every fold: 42 s


def samples_with_groups(count: int = 300, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        group = int(rng.integers(0, 60))
        label = int(group % 3 == 0)  # classes come in whole patients, about 1:2
        samples.append(Sample(path=Path(f"{index}.png"), label=label, group=f"patient-{group}"))
    return samples


def test_no_group_is_in_two_folds_and_every_sample_has_one() -> None:
    samples = samples_with_groups()
    folds = fold_of_each(samples, 5, seed=1)
    assert set(folds.tolist()) == set(range(5))
    seen: dict[str, set[int]] = defaultdict(set)
    for sample, fold in zip(samples, folds, strict=True):
        seen[sample.group].add(int(fold))
    assert all(len(f) == 1 for f in seen.values())


def test_folds_keep_the_class_balance() -> None:
    samples = samples_with_groups()
    folds = fold_of_each(samples, 5, seed=1)
    labels = np.array([s.label for s in samples])
    overall = labels.mean()
    # StratifiedGroupKFold keeps every fold within 1.5 points of the overall share on this fixture, for any
    # seed (measured: 0.0149 for seeds 1-7); a class-blind assignment of the same groups is off by 9 to 23.
    for fold in range(5):
        assert abs(labels[folds == fold].mean() - overall) < 0.03


def test_folds_are_deterministic_for_a_seed_and_change_with_it() -> None:
    samples = samples_with_groups()
    assert (fold_of_each(samples, 5, seed=3) == fold_of_each(samples, 5, seed=3)).all()
    assert (fold_of_each(samples, 5, seed=3) != fold_of_each(samples, 5, seed=4)).any()


def small_cross_validation(data: Path, reports: Path, *more: str) -> list[str]:
    """`cross-validate malaria` in 3 folds of one epoch: the command line of the runs below."""
    return ["cross-validate", "malaria", "--data", str(data), "--folds", "3", "--epochs", "1", "--batch-size", "16",
            "--report-dir", str(reports), *more]  # fmt: skip


@pytest.fixture(scope="module")
def a_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A 3-fold cross-validation of a small synthetic malaria set: (its report, the report folder)."""
    from training.cli import main

    root = tmp_path_factory.mktemp("crossval")
    data = write_synthetic_dataset(root / "data", per_class=30)
    reports = root / "reports"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(small_cross_validation(data, reports))
    assert code == 0
    (root / "printed.json").write_text(printed.getvalue())  # the command's answer on stdout
    (report,) = reports.glob("malaria-*[0-9]ep.json")
    return json.loads(report.read_text()), reports


def test_the_command_reports_every_metric_over_folds_and_never_uses_the_test_part(a_run) -> None:
    result, reports = a_run
    assert set(result["summary"]) == {"accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"}
    assert all({"mean", "std"} == set(v) for v in result["summary"].values())
    test_part = split_as(find_samples(reports.parent / "data", "malaria"), SplitSpec()).test
    assert result["images"] == 60 - len(test_part)
    assert sum(r["n_evaluated"] for r in result["rounds"]) == result["images"]
    assert json.loads((reports.parent / "printed.json").read_text())["folds"] == 3


def test_each_round_is_also_measured_at_the_threshold_chosen_on_its_validation_fold(a_run) -> None:
    from training.evaluation.metrics import compute_metrics, probabilities_of
    from training.release.trust import screening_threshold

    result, reports = a_run
    assert result["screening"]["target_sensitivity"] == 0.95
    assert set(result["screening"]["summary"]) == set(result["summary"])
    kept = json.loads((reports / result["scores_file"]).read_text())  # compact, beside the report
    assert len(kept) == len(result["rounds"]) == 3
    for round_, scores in zip(result["rounds"], kept):
        held_out, validation = scores["held_out"], scores["validation"]
        assert len(held_out["labels"]) == round_["n_evaluated"] and len(validation["labels"]) == round_["n_validation"]
        # the kept scores reproduce the round's threshold and both sets of figures
        threshold = screening_threshold(np.array(validation["infected"]), np.array(validation["labels"]), 0.95)
        assert abs(threshold - round_["screening_threshold"]) < 1e-4
        labels, infected = np.array(held_out["labels"]), np.array(held_out["infected"])
        at_half = compute_metrics(labels, probabilities_of(infected))
        at_screening = compute_metrics(labels, probabilities_of(infected), threshold)
        assert abs(at_half.accuracy - round_["metrics"]["accuracy"]) < 0.02
        assert abs(at_screening.sensitivity - round_["metrics_at_screening"]["sensitivity"]) < 0.02
        assert abs(at_screening.accuracy - round_["metrics_at_screening"]["accuracy"]) < 0.02


def test_a_subset_takes_whole_groups() -> None:
    from training.experiments.crossval import grouped_subset

    samples = samples_with_groups()
    subset = grouped_subset(samples, len(samples) // 3, seed=1)
    chosen = {s.group for s in subset}
    assert {s.path for s in samples if s.group in chosen} == {s.path for s in subset}  # whole groups
    assert len(subset) >= len(samples) // 3 and len(subset) < len(samples)
    assert grouped_subset(samples, 10, seed=1) == grouped_subset(samples, 10, seed=1)


def test_a_per_group_cap_keeps_every_group_and_at_most_cap_of_each() -> None:
    from collections import Counter

    from training.experiments.crossval import capped_per_group

    samples = samples_with_groups()
    capped = capped_per_group(samples, 3, seed=1)
    per_group = Counter(s.group for s in capped)
    assert set(per_group) == {s.group for s in samples}  # every patient stays
    assert max(per_group.values()) == 3
    sizes = Counter(s.group for s in samples)
    assert all(per_group[g] == min(3, sizes[g]) for g in sizes)
    assert {s.path for s in capped} <= {s.path for s in samples}
    assert capped == capped_per_group(samples, 3, seed=1)
    assert capped != capped_per_group(samples, 3, seed=2)  # drawn at random within the group


def test_flips_the_recipe_allows_are_measured_as_test_time_augmentation_from_kept_scores(a_run) -> None:
    from training.experiments.crossval import measured_with

    result, reports = a_run
    assert result["with_flips"]["flips"] == ["horizontal", "vertical"]  # a cell has no left-right or up-down
    rounds = [{"scores": kept} for kept in json.loads((reports / result["scores_file"]).read_text())]
    assert all("infected_with_flips" in r["scores"]["held_out"] for r in rounds)
    # the plain scores reproduce the plain figures, so the two are measured the same way
    plain = measured_with(rounds, "infected")
    assert abs(plain["at_0_5"]["accuracy"]["mean"] - result["summary"]["accuracy"]["mean"]) < 0.02
    assert abs(plain["at_screening"]["accuracy"]["mean"] - result["screening"]["summary"]["accuracy"]["mean"]) < 0.02


def test_a_recipe_that_keeps_orientation_gets_no_flips() -> None:
    from dataclasses import replace

    from training.data.config import DISEASES
    from training.experiments.crossval import recipe_flips

    assert recipe_flips(DISEASES["pneumonia"].medscan) == []  # a chest X-ray has a left and a right
    assert recipe_flips(DISEASES["malaria"].medscan) == ["horizontal", "vertical"]
    assert recipe_flips(replace(DISEASES["malaria"].medscan, flip_vertical=False)) == ["horizontal"]


def test_operating_points_come_from_the_kept_scores_at_each_target_with_and_without_flips(a_run, capsys) -> None:
    from training.cli import main
    from training.experiments.crossval import operating_points

    result, reports = a_run
    (report,) = reports.glob("malaria-*[0-9]ep.json")
    rows = operating_points(report, targets=(0.5, 0.95, 1.0))
    assert [(r["target_sensitivity"], r["test_time_flips"]) for r in rows] == [
        (0.5, []),
        (0.95, []),
        (1.0, []),
        (0.5, ["horizontal", "vertical"]),
        (0.95, ["horizontal", "vertical"]),
        (1.0, ["horizontal", "vertical"]),
    ]
    # the report's own served figures (kept scores are rounded to 5 decimals: a tie may fall the other way)
    served = result["screening"]["summary"]["accuracy"]["mean"]
    assert rows[1]["accuracy"]["mean"] == pytest.approx(served, abs=0.02)
    assert rows[4]["accuracy"] == result["with_flips"]["at_screening"]["accuracy"]  # both from the kept scores
    # a higher target never catches fewer infected images on the same rounds' validation folds
    assert rows[0]["sensitivity"]["mean"] <= rows[1]["sensitivity"]["mean"] <= rows[2]["sensitivity"]["mean"]
    assert main(["operating-points", str(report)]) == 0
    assert "0.98    horizontal, vertical" in capsys.readouterr().out


def test_operating_points_need_kept_scores(tmp_path: Path, capsys) -> None:
    from training.cli import main

    report = tmp_path / "old.json"
    report.write_text(json.dumps({"summary": {}}))
    assert main(["operating-points", str(report)]) != 0
    assert "kept no scores" in capsys.readouterr().err


def test_a_recipe_that_differs_gets_its_own_report_name() -> None:
    from dataclasses import replace

    from training.data.config import DISEASES
    from training.experiments.crossval import report_tag

    config = DISEASES["pneumonia"]
    recipe = replace(config.medscan, pretrained_start=False)
    tags = {
        report_tag("pneumonia", "paper_cnn", config.spec(), variant)
        for variant in (
            recipe,
            replace(recipe, learning_rate=3e-4),
            replace(recipe, pretrained_start=True),
            replace(recipe, epochs=recipe.epochs + 1),
            replace(recipe, stain_jitter=True),
            replace(recipe, intensity_jitter=True),
            replace(recipe, dihedral=True),
            replace(recipe, flip_vertical=True),
        )
    }
    assert len(tags) == 8  # none overwrites another's report
    slower = replace(recipe, learning_rate=3e-4)
    assert report_tag("pneumonia", "paper_cnn", config.spec(), slower).endswith("-lr0.0003")
    assert report_tag("pneumonia", "paper_cnn", config.spec(), recipe, init_seed=7).endswith("-25ep-init7")


def test_another_init_seed_trains_other_models_on_the_same_folds_into_its_own_report(a_run, tmp_path: Path) -> None:
    from training.cli import main

    first, reports = a_run
    data = write_synthetic_dataset(tmp_path / "data", per_class=30)  # the same images as a_run's
    assert main(small_cross_validation(data, reports, "--init-seed", "5")) == 0
    (report,) = reports.glob("malaria-*-init5.json")
    second = json.loads(report.read_text())
    assert second["seed"] == first["seed"] == 42 and second["init_seed"] == 5 and first["init_seed"] == 42
    kept = [json.loads((reports / result["scores_file"]).read_text()) for result in (first, second)]
    for ours, theirs in zip(*kept, strict=True):
        assert ours["held_out"]["labels"] == theirs["held_out"]["labels"]  # the same patients in each round
        assert ours["held_out"]["infected"] != theirs["held_out"]["infected"]  # other networks
    assert (
        main(
            [
                "ensemble-crossval",
                str(reports / f"{Path(first['scores_file']).name.removesuffix('.scores.json')}.json"),
                str(report),
            ]
        )
        == 0
    )  # a seed ensemble


def left_half_model() -> keras.Model:
    """A stand-in network whose P(infected) is the mean of an 8x8 image's left half: a flip changes it in a way
    computed here by hand."""
    images = keras.Input((8, 8, 1))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :4], axis=(1, 2, 3)))(images)
    return keras.Model(images, keras.layers.Lambda(lambda p: keras.ops.stack([p, 1 - p], axis=1))(left))


@pytest.mark.parametrize("flip_invariant", [False, True])
def test_a_rounds_flip_scores_are_the_models_answers_on_the_flipped_images(monkeypatch, flip_invariant: bool) -> None:
    from app.contract.preprocessing import ColourMode, InputSpec
    from training.data.config import DISEASES
    from training.experiments import crossval
    from training.networks.fitting import FittedModel
    from training.release.train import TrainOptions

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(30) % 2
    pool = crossval.Pool(samples=[], pixels=pixels, labels=labels, folds=np.arange(30) % 3)
    stand_in = left_half_model()
    fitted = FittedModel(model=stand_in, history={"loss": [1.0]}, best_epoch=1, seconds=0.0, class_weights=None)
    monkeypatch.setattr(crossval, "fit_model", lambda *args, **kwargs: fitted)
    # a network declared flip-invariant (fundus_lesions) is not run on the flips: its answers stand for them
    monkeypatch.setattr(crossval, "flip_invariant", lambda model: flip_invariant)
    recipe = DISEASES["malaria"].medscan  # horizontal and vertical flips
    options = TrainOptions(config=DISEASES["malaria"], data_dir=Path("."), models_dir=Path("."))
    result, _, _, _ = crossval.evaluate_round(options, InputSpec(8, 8, ColourMode.GRAYSCALE), recipe, pool, 0, 3)

    held = pixels[pool.folds == 0].astype(np.float64) / 255

    def left(images: np.ndarray) -> np.ndarray:
        return images[:, :, :4].mean(axis=(1, 2, 3))

    views = [held, held[:, :, ::-1], held[:, ::-1, :], held[:, ::-1, ::-1]]  # as sent, each flip, both
    kept = result.scores["held_out"]
    assert kept["infected"] == pytest.approx(left(held), abs=1e-5)
    if flip_invariant:
        assert kept["infected_with_flips"] == kept["infected"]
        return
    assert kept["infected_with_flips"] == pytest.approx(np.mean([left(v) for v in views], axis=0), abs=1e-5)
    assert not np.allclose(kept["infected"], kept["infected_with_flips"])  # the flips did change the answers


def test_operating_points_by_hand_on_a_tiny_fixed_example() -> None:
    """Validation: infected (label 0) scores 0.9 and 0.6, so a 100% target needs threshold 0.6 and a 50% one
    0.9. Held out: infected 0.7 and 0.2, uninfected 0.65 and 0.1."""
    from training.experiments.crossval import measured_with

    round_ = {"scores": {
        "validation": {"labels": [0, 0, 1, 1], "infected": [0.9, 0.6, 0.4, 0.1]},
        "held_out": {"labels": [0, 0, 1, 1], "infected": [0.7, 0.2, 0.65, 0.1]},
    }}  # fmt: skip
    full = measured_with([round_, round_], "infected", target_sensitivity=1.0)
    assert full["at_screening"]["sensitivity"] == {"mean": 0.5, "std": 0.0}  # 0.7 caught, 0.2 missed
    assert full["at_screening"]["specificity"] == {"mean": 0.5, "std": 0.0}  # 0.65 flagged, 0.1 cleared
    assert full["at_screening"]["accuracy"]["mean"] == 0.5
    assert full["at_0_5"]["accuracy"]["mean"] == 0.5  # 0.7 and 0.65 flagged, 0.2 and 0.1 not
    half = measured_with([round_], "infected", target_sensitivity=0.5)  # threshold 0.9: only 0.9-and-up flagged
    assert half["at_screening"]["sensitivity"]["mean"] == 0.0 and half["at_screening"]["specificity"]["mean"] == 1.0


def overconfident_rounds(rounds: int = 4, count: int = 400, seed: int = 3) -> list[dict]:
    """Kept scores whose log-odds are three times what the truth is: calibrated answers would be P = sigmoid(z)."""
    rng = np.random.default_rng(seed)

    def part() -> dict:
        z = rng.normal(0, 1.5, count)
        labels = np.where(rng.random(count) < 1 / (1 + np.exp(-z)), 0, 1)  # 0 = infected
        return {"labels": labels.tolist(), "infected": (1 / (1 + np.exp(-3 * z))).round(5).tolist()}

    return [{"scores": {"held_out": part(), "validation": part()}} for _ in range(rounds)]


def test_calibration_is_fitted_on_each_validation_fold_and_measured_on_its_held_out_fold() -> None:
    from training.evaluation.metrics import expected_calibration_error
    from training.experiments.crossval import calibrated_ece

    rounds = overconfident_rounds()
    uncalibrated = calibrated_ece(rounds, "infected", "none")
    by_hand = [
        expected_calibration_error(
            np.array(r["scores"]["held_out"]["infected"]), np.array(r["scores"]["held_out"]["labels"])
        )
        for r in rounds
    ]
    assert uncalibrated["ece"]["mean"] == pytest.approx(np.mean(by_hand), abs=1e-6)
    pooled = expected_calibration_error(
        np.concatenate([r["scores"]["held_out"]["infected"] for r in rounds]),
        np.concatenate([r["scores"]["held_out"]["labels"] for r in rounds]),
    )
    assert uncalibrated["pooled_ece"] == pytest.approx(pooled, abs=1e-6)
    temperature = calibrated_ece(rounds, "infected", "temperature")
    assert uncalibrated["pooled_ece"] > 0.1 and temperature["pooled_ece"] < 0.04  # T near 3 undoes the overconfidence
    assert temperature["method"] == "temperature" and temperature["ece"]["std"] > 0

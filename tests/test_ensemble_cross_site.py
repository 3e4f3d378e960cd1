"""An ensemble's leave-one-site-out figures from its members' cross-site reports, with no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.test_cross_site import write_two_site_dataset
from training.data.config import describe_disease, disease_samples, sites_of
from training.data.samples import DataError, manifest_notes
from training.experiments.ensemble_cross_site import combine_cross_sites, mean_answer_log_odds
from training.release.trust import answer_rule


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_site_dataset(tmp_path_factory.mktemp("sites") / "data")


def write_member(
    folder: Path, name: str, data: Path, side: int, seed: int, served: bool = False, arch: str = "paper_cnn"
) -> Path:
    """A member's cross-site report with kept answers, as `cross-site` writes it, for every image of each site;
    `served`: with each image's relative distance and the validation part's answers, as it writes them now."""
    samples = disease_samples(data, "lesion")
    sites = sites_of(samples, manifest_notes(data, samples), describe_disease("lesion", data).sites)
    rng = np.random.default_rng(seed)
    scores, rounds = {}, []
    for site in dict.fromkeys(sites):
        labels = [sample.label for sample, where in zip(samples, sites) if where == site]
        scores[site] = {"labels": labels, "probability": rng.random(len(labels)).round(6).tolist()}
        if served:
            validation_labels = [0, 1] * 12
            scores[site] |= {
                "log_odds": rng.normal(0, 2, len(labels)).round(5).tolist(),
                "distance": rng.gamma(4, 0.2, len(labels)).round(5).tolist(),
                "validation": {
                    "labels": validation_labels,
                    # the infected ones mostly higher, so a threshold exists for 95% of them
                    "log_odds": (rng.normal(0, 1, 24) + 2 * (np.array(validation_labels) == 0)).tolist(),
                    "probability": rng.random(24).tolist(),
                    "distance": rng.gamma(4, 0.15, 24).round(5).tolist(),
                    "groups": [f"v{i // 2}" for i in range(24)],
                },
            }
        rounds.append({"site": site, "n_train": 30, "n_evaluated": len(labels), "best_epoch": seed, "figures": {}})
    (folder / f"{name}.scores.json").write_text(json.dumps(scores))
    report = {
        "disease": "lesion",
        "seed": 42,
        "arch": arch,
        "input": [side, side, 1],
        "enhancement": "none",
        "sites": {site: sites.count(site) for site in dict.fromkeys(sites)},
        "held_out": rounds,
        "seconds": 10.0,
        "scores_file": f"{name}.scores.json",
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def test_each_site_is_measured_on_the_mean_of_the_members_answers(two_sites: Path, tmp_path: Path) -> None:
    first = write_member(tmp_path, "lesion-48px", two_sites, 48, seed=1)
    second = write_member(tmp_path, "lesion-96px", two_sites, 96, seed=2)
    result, written = combine_cross_sites([first, second], two_sites, tmp_path / "out")
    assert written == tmp_path / "out" / "lesion-ensemble-48px+96px.json" and written.exists()
    assert result["input"] == [96, 96, 1] and result["member_inputs"] == [[48, 48, 1], [96, 96, 1]]
    kept = [json.loads(path.with_suffix(".scores.json").read_text()) for path in (first, second)]
    for round_ in result["held_out"]:
        site = round_["site"]
        mean = (np.array(kept[0][site]["probability"]) + np.array(kept[1][site]["probability"])) / 2
        labels = np.array(kept[0][site]["labels"])
        assert round_["figures"]["roc_auc"] == pytest.approx(1 - roc_auc_score(labels, mean))  # label 0: infected
        low, high = round_["figures"]["intervals"]["roc_auc"]
        assert low <= round_["figures"]["roc_auc"] <= high
        assert round_["best_epoch"] == [1, 2]
    assert "not measured" not in result["method"] and "no screening threshold" in result["method"]


def test_members_measured_on_other_images_or_sites_are_refused(two_sites: Path, tmp_path: Path) -> None:
    first = write_member(tmp_path, "lesion-a", two_sites, 48, seed=1)
    second = write_member(tmp_path, "lesion-b", two_sites, 48, seed=2)
    scores = json.loads((tmp_path / "lesion-b.scores.json").read_text())
    site = next(iter(scores))
    scores[site]["labels"] = scores[site]["labels"][::-1]
    (tmp_path / "lesion-b.scores.json").write_text(json.dumps(scores))
    with pytest.raises(DataError, match="different images"):
        combine_cross_sites([first, second], two_sites, tmp_path / "out")
    with pytest.raises(DataError, match="at least two"):
        combine_cross_sites([first], two_sites, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_members_that_kept_their_validation_answers_give_the_figures_as_served(two_sites: Path, tmp_path: Path) -> None:
    first = write_member(tmp_path, "lesion-48px", two_sites, 48, seed=1, served=True)
    second = write_member(tmp_path, "lesion-96px", two_sites, 96, seed=2, served=True)
    result, _ = combine_cross_sites([first, second], two_sites, tmp_path / "out")
    assert "threshold fitted on that mean" in result["method"] and "no screening threshold" not in result["method"]
    kept = [json.loads(path.with_suffix(".scores.json").read_text()) for path in (first, second)]
    for round_ in result["held_out"]:
        site, figures = round_["site"], round_["figures"]
        validation = [member[site]["validation"] for member in kept]
        # the mean of the members' P(infected) before calibration
        answers = np.mean([1 / (1 + np.exp(-np.array(part["log_odds"]))) for part in validation], axis=0)
        odds = np.log(answers) - np.log1p(-answers)
        calibration, threshold = answer_rule(odds, np.array(validation[0]["labels"]), validation[0]["groups"], 0.95)
        assert figures["screening"]["threshold"] == pytest.approx(threshold)
        assert figures["ece"]["method"] == calibration.method
        # The ensemble's distance is the larger member's; its flag the validation part's 97.5th percentile of it.
        held = np.max([member[site]["distance"] for member in kept], axis=0)
        bound = np.quantile(np.max([part["distance"] for part in validation], axis=0), 0.975)
        assert figures["out_of_distribution"] == pytest.approx(np.mean(held > bound))
        mean = np.mean([1 / (1 + np.exp(-np.array(member[site]["log_odds"]))) for member in kept], axis=0)
        assert figures["roc_auc"] == pytest.approx(1 - roc_auc_score(kept[0][site]["labels"], mean))


def test_a_lesion_networks_distance_is_left_out_of_the_ensembles(two_sites: Path, tmp_path: Path) -> None:
    learnt = write_member(tmp_path, "lesion-cnn", two_sites, 48, seed=1, served=True)
    lesions = write_member(tmp_path, "lesion-measures", two_sites, 48, seed=2, served=True, arch="fundus_lesions")
    kept = json.loads(learnt.with_suffix(".scores.json").read_text())
    for site, answers in kept.items():  # far from the lesion network's, so the test fails if it is read
        scores = json.loads(lesions.with_suffix(".scores.json").read_text())
        scores[site]["distance"] = (np.array(answers["distance"]) * 10).tolist()
        lesions.with_suffix(".scores.json").write_text(json.dumps(scores))
    result, _ = combine_cross_sites([learnt, lesions], two_sites, tmp_path / "out")
    assert result["distance_of"] == ["lesion-cnn"]
    for round_ in result["held_out"]:
        site = kept[round_["site"]]
        bound = np.quantile(site["validation"]["distance"], 0.975)
        assert round_["figures"]["out_of_distribution"] == pytest.approx(np.mean(np.array(site["distance"]) > bound))


def test_a_member_without_validation_answers_leaves_the_served_figures_unmeasured(
    two_sites: Path, tmp_path: Path
) -> None:
    first = write_member(tmp_path, "lesion-48px", two_sites, 48, seed=1, served=True)
    second = write_member(tmp_path, "lesion-96px", two_sites, 96, seed=2)  # an older report
    result, _ = combine_cross_sites([first, second], two_sites, tmp_path / "out")
    assert "no screening threshold" in result["method"]
    assert all("screening" not in round_["figures"] for round_ in result["held_out"])


def test_the_mean_answer_is_exact_where_the_members_are_sure() -> None:
    # 40 and 50 nats: every sigmoid rounds to 1 in float64, yet the mean's log-odds stay finite and ordered.
    odds = mean_answer_log_odds([[40.0, 50.0, 0.0], [40.0, 50.0, 2.0]])
    assert odds[0] == pytest.approx(40.0) and odds[1] == pytest.approx(50.0)
    mean = (0.5 + 1 / (1 + np.exp(-2.0))) / 2
    assert odds[2] == pytest.approx(np.log(mean / (1 - mean)))

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
from training.experiments.ensemble_cross_site import combine_cross_sites


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_site_dataset(tmp_path_factory.mktemp("sites") / "data")


def write_member(folder: Path, name: str, data: Path, side: int, seed: int) -> Path:
    """A member's cross-site report with kept answers, as `cross-site` writes it, for every image of each site."""
    samples = disease_samples(data, "lesion")
    sites = sites_of(samples, manifest_notes(data, samples), describe_disease("lesion", data).sites)
    rng = np.random.default_rng(seed)
    scores, rounds = {}, []
    for site in dict.fromkeys(sites):
        labels = [sample.label for sample, where in zip(samples, sites) if where == site]
        scores[site] = {"labels": labels, "probability": rng.random(len(labels)).round(6).tolist()}
        rounds.append({"site": site, "n_train": 30, "n_evaluated": len(labels), "best_epoch": seed, "figures": {}})
    (folder / f"{name}.scores.json").write_text(json.dumps(scores))
    report = {
        "disease": "lesion",
        "seed": 42,
        "arch": "paper_cnn",
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

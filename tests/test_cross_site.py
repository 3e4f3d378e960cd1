"""Leave-one-site-out evaluation, labels from the manifest, and the per-site and per-grade card figures, on
small synthetic data sets (two 'hospitals', graded 'fundus' images)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import read_card
from tests.images import blob
from training.cli import main
from training.data.config import describe_disease, disease_samples, sites_of
from training.data.pipeline import decode_samples
from training.data.samples import DataError, manifest_notes
from training.evaluation.generalisation import grade_figures, grades_of, within_site
from training.experiments.ensemble_cross_site import combine_cross_sites

FIELDS = ["path", "sha1", "group", "note", "source_repo", "source_commit", "source_path"]
SITES = [{"name": "north", "pattern": "^north_"}, {"name": "south", "pattern": ""}]


def write_two_site_dataset(root: Path, disease: str = "lesion", per_class_and_site: int = 24) -> Path:
    """Two sites whose images differ in brightness (another scanner), each with both classes, three files
    a patient, grades in the notes (infected: grade 2-3, uninfected: 0-1)."""
    rows = []
    for site, offset in (("north", 0), ("south", 40)):
        for label, class_name in enumerate(("infected", "uninfected")):
            folder = root / disease / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class_and_site):
                name = f"{site}_{class_name}_{index}.png"
                image = np.asarray(blob(32, infected=label == 0, seed=hash((site, label, index)) % 10_000))
                from PIL import Image

                Image.fromarray(np.clip(image.astype(int) + offset, 0, 255).astype(np.uint8)).save(folder / name)
                grade = (2 + index % 2) if label == 0 else index % 2
                rows.append(
                    {
                        "path": f"{disease}/{class_name}/{name}",
                        "group": f"{site}-{label}-{index // 3}",
                        "note": f"synthetic; grade {grade}; scanner {site}",
                    }
                )
    with (root / "MANIFEST.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({name: row.get(name, "") for name in FIELDS})
    (root / disease / "disease.json").write_text(
        json.dumps({"sites": SITES, "grade_pattern": r"grade (\d)", "image_size": 48, "colour_mode": "grayscale"})
    )
    return root


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_site_dataset(tmp_path_factory.mktemp("sites") / "data")


def test_sites_come_from_the_rules_in_order(two_sites: Path) -> None:
    config = describe_disease("lesion", two_sites)
    samples = disease_samples(two_sites, "lesion")
    sites = sites_of(samples, manifest_notes(two_sites, samples), config.sites)
    assert sites.count("north") == sites.count("south") == 48
    assert all((site == "north") == sample.path.name.startswith("north_") for sample, site in zip(samples, sites))


def test_labels_come_from_a_grade_in_the_manifest_note(two_sites: Path) -> None:
    """A disease with no images of its own: the lesion images, infected from grade 3 (not from their folders)."""
    (two_sites / "severe").mkdir()
    (two_sites / "severe" / "disease.json").write_text(
        json.dumps({"labels": {"images_from": "lesion", "pattern": r"grade (\d)", "infected_from": 3}})
    )
    samples = disease_samples(two_sites, "severe")
    notes = manifest_notes(two_sites, samples)
    assert len(samples) == 96
    for sample, note in zip(samples, notes):
        assert (sample.label == 0) == ("grade 3" in note)
    assert sum(s.label == 0 for s in samples) == 24  # every other infected image is grade 3
    assert describe_disease("severe", two_sites).images_folder == "lesion"
    # each image keeps the grade its label was read from, through decoding (an ordinal head fits on it)
    assert [s.level for s in samples] == [float(re.search(r"grade (\d)", note).group(1)) for note in notes]
    decoded = decode_samples(samples[:8], describe_disease("severe", two_sites).spec())
    assert decoded.levels is not None and decoded.levels.tolist() == [s.level for s in samples[:8]]
    folders = disease_samples(two_sites, "lesion")[:4]  # labels from the class folders: no levels
    assert decode_samples(folders, describe_disease("lesion", two_sites).spec()).levels is None


def test_an_image_without_the_grade_is_a_clear_error(two_sites: Path, tmp_path: Path) -> None:
    data = write_two_site_dataset(tmp_path / "data")
    manifest = (data / "MANIFEST.csv").read_text().replace("grade 1;", "ungraded;", 1)
    (data / "MANIFEST.csv").write_text(manifest)
    (data / "graded").mkdir()
    (data / "graded" / "disease.json").write_text(
        json.dumps({"labels": {"images_from": "lesion", "pattern": r"grade (\d)", "infected_from": 2}})
    )
    with pytest.raises(DataError, match="cannot be read"):
        disease_samples(data, "graded")


@pytest.mark.parametrize(
    "labels",
    [{"images_from": "lesion"}, {"images_from": "lesion", "pattern": "grade \\d", "infected_from": 2}, "grade"],
)
def test_a_bad_label_rule_is_refused(tmp_path: Path, labels: object) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "disease.json").write_text(json.dumps({"labels": labels}))
    with pytest.raises(ValueError, match="labels"):
        describe_disease("bad", tmp_path)


def test_per_grade_and_per_site_figures_are_counted_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])  # 0: infected
    calibrated = np.array([0.9, 0.2, 0.8, 0.6, 0.1, 0.05])
    figures = grade_figures([2, 2, 3, 1, 0, 0], labels, calibrated, 0.5, ["infected", "uninfected"])
    assert [(f.grade, f.label, f.n_images, f.flagged_infected) for f in figures] == [
        (0, "uninfected", 2, 0.0),
        (1, "uninfected", 1, 1.0),
        (2, "infected", 2, 0.5),
        (3, "infected", 1, 1.0),
    ]
    assert grades_of(["ICDR grade 4; DME 1", "no grade"], r"ICDR grade (\d)") == [4, None]
    within = within_site(["a", "a", "b", "b", "a", "b"], labels, calibrated, calibrated, 0.5)
    assert within["a"]["n_images"] == 3 and within["a"]["sensitivity"] == 0.5  # 0.9 caught, 0.2 missed
    assert within["b"]["specificity"] == 0.5 and within["b"]["screening"]["sensitivity"] == 1.0


@pytest.mark.slow
def test_cross_site_trains_without_each_site_and_records_it_in_the_card(
    two_sites: Path, tmp_path: Path, model_factory, capsys
) -> None:
    reports = tmp_path / "reports"
    code = main(
        [
            "cross-site",
            "lesion",
            "--data",
            str(two_sites),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--report-dir",
            str(reports),
        ]
    )
    assert code == 0
    report = json.loads((reports / "lesion-48px.json").read_text())
    assert report["sites"] == {"north": 48, "south": 48}
    assert report["arch"] == "paper_cnn" and report["initial_weights"] == "none" and report["pretraining"] is None
    held_out = {r["site"]: r for r in report["held_out"]}
    assert set(held_out) == {"north", "south"}
    for site, round_ in held_out.items():
        assert round_["n_evaluated"] == 48  # every image of the held-out site, none of it trained on
        assert round_["n_train"] + round_["n_validation"] == 48
        figures = round_["figures"]
        assert 0 <= figures["roc_auc"] <= 1 and 0 <= figures["out_of_distribution"] <= 1
        assert {"sensitivity", "specificity", "threshold"} <= set(figures["screening"])
        assert figures["site_shift"]["percentile"] == 90.0
        shift = figures["prior_shift"]
        assert shift["site_prevalence"] == 0.5 and 0 < shift["estimated_prevalence"] < 1  # 24 of each class a site
        assert 0 < shift["calibrated_at"] < 1 and 0 <= shift["ece_at_site_prevalence"] <= 1
    scores = json.loads((reports / report["scores_file"]).read_text())
    assert set(scores) == {"north", "south"}
    assert all(len(kept["labels"]) == len(kept["probability"]) == 48 for kept in scores.values())
    assert sum(scores["north"]["labels"]) == 24  # 0 is infected: half of each site
    for site, kept in scores.items():
        # Distances are kept over the validation quantile: 1 is the out-of-distribution flag.
        flagged = np.mean(np.array(kept["distance"]) > 1)
        assert flagged == pytest.approx(held_out[site]["figures"]["out_of_distribution"], abs=1 / 48)
        validation = kept["validation"]
        assert len(validation["labels"]) == len(validation["probability"]) == len(validation["groups"])
        assert len(validation["distance"]) == held_out[site]["n_validation"]
    # The same member twice is an ensemble that must answer each site exactly as the member did.
    twin = reports / "lesion-twin-48px.json"
    twin.write_text((reports / "lesion-48px.json").read_text())
    combined, _ = combine_cross_sites([reports / "lesion-48px.json", twin], two_sites, tmp_path / "ensemble")
    assert "threshold fitted on that mean" in combined["method"]
    for round_ in combined["held_out"]:
        member, ensemble = held_out[round_["site"]]["figures"], round_["figures"]
        assert ensemble["roc_auc"] == pytest.approx(member["roc_auc"], abs=1e-4)
        assert ensemble["out_of_distribution"] == pytest.approx(member["out_of_distribution"], abs=1 / 48)
        assert ensemble["site_shift"]["flagged"] == pytest.approx(member["site_shift"]["flagged"], abs=1 / 48)
        assert {"sensitivity", "specificity", "threshold"} <= set(ensemble["screening"])
    # The report goes into a card of the same input.
    folder = model_factory(tmp_path / "models", "lesion", size=48)
    assert (
        main(["record-cross-site", "lesion", str(reports / "lesion-48px.json"), "--out", str(tmp_path / "models")]) == 0
    )
    card = read_card(folder / "metadata.json")
    assert [s.site for s in card.generalisation.sites] == ["north", "south"]
    assert card.generalisation.sites[0].held_out["roc_auc"] == held_out["north"]["figures"]["roc_auc"]


def test_a_cross_site_report_of_another_input_is_refused(tmp_path: Path, model_factory) -> None:
    model_factory(tmp_path / "models", "lesion", size=50)
    report = tmp_path / "r.json"
    report.write_text(
        json.dumps(
            {
                "disease": "lesion",
                "input": [48, 48, 1],
                "enhancement": "none",
                "sites": {},
                "held_out": [],
                "seconds": 1,
            }
        )
    )
    assert main(["record-cross-site", "lesion", str(report), "--out", str(tmp_path / "models")]) == 2


def test_a_disease_without_sites_is_refused(tmp_path: Path) -> None:
    from tests.conftest import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data")
    assert main(["cross-site", "malaria", "--data", str(data), "--epochs", "1"]) == 2


@pytest.mark.slow
def test_training_with_balanced_sites_records_it_and_answers(tmp_path: Path) -> None:
    data = write_two_site_dataset(tmp_path / "data")
    config = json.loads((data / "lesion" / "disease.json").read_text())
    (data / "lesion" / "disease.json").write_text(json.dumps({**config, "balance_sites": True}))
    models = tmp_path / "models"
    assert main(["train", "lesion", "--data", str(data), "--out", str(models), "--epochs", "1",
                 "--batch-size", "16"]) == 0  # fmt: skip
    card = read_card(models / "lesion" / "1" / "metadata.json")
    assert card.training.settings["balance_sites"] is True
    assert {site.site for site in card.generalisation.sites} == {"north", "south"}  # the test part, per site
    assert {grade.grade for grade in card.by_grade} == {0, 1, 2, 3}
    assert card.out_of_distribution.validation_quantiles and len(card.out_of_distribution.validation_quantiles) == 21

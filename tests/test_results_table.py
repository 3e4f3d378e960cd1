"""The README's tables are built from the cards: every figure in them comes from a card."""

from __future__ import annotations

from pathlib import Path

from app.contract.model_card import (
    CrossValidation,
    EnsembleMember,
    ScreeningCrossValidation,
    SourceConfound,
    write_card,
)
from app.contract.preprocessing import ColourMode, InputSpec
from tests.model_fixtures import fixture_card
from training.evaluation.results_table import crossval_table, table


def write_version(
    models: Path,
    disease: str,
    cross_validation: CrossValidation | None = None,
    source_confound: SourceConfound | None = None,
    ensemble_of: list[EnsembleMember] | None = None,
) -> None:
    folder = models / disease / "2"
    folder.mkdir(parents=True)
    card = fixture_card(
        disease,
        2,
        InputSpec(50, 50, ColourMode.GRAYSCALE),
        cross_validation=cross_validation,
        source_confound=source_confound,
        ensemble_of=ensemble_of,
    )
    write_card(card, folder / "metadata.json")


def test_the_crossval_table_shows_each_cards_figures_goal_and_the_papers(tmp_path: Path) -> None:
    summary = {"accuracy": {"mean": 0.9258, "std": 0.0124}, "roc_auc": {"mean": 0.9834, "std": 0.005}}
    write_version(
        tmp_path,
        "malaria",
        CrossValidation(
            folds=5,
            seed=42,
            images=20518,
            groups=147,
            input=[50, 50, 1],
            architecture="paper_cnn",
            recipe={},
            differences=["epochs: 12 vs 20"],
            summary=summary,
            seconds=1700,
            report="reports/crossval/m.json",
            screening=ScreeningCrossValidation(
                target_sensitivity=0.95,
                summary={
                    "accuracy": {"mean": 0.951, "std": 0.008},
                    "sensitivity": {"mean": 0.9433, "std": 0.02},
                    "specificity": {"mean": 0.955, "std": 0.01},
                },
            ),
        ),
    )
    write_version(
        tmp_path,
        "pneumonia",
        source_confound=SourceConfound(
            features=["mean_r"],
            input=[50, 50, 1],
            images=10,
            groups=5,
            roc_auc=0.8,
            fold_mean=0.807,
            fold_std=0.028,
            report="reports/pneumonia/confound.json",
        ),
    )
    header, _, *lines = crossval_table(tmp_path).splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines}
    column = {name: index for index, name in enumerate(header.split(" | "))}
    malaria = rows["malaria"]
    # the served operating point first, 0.5 beside it
    assert malaria[column["grouped CV: accuracy as served"]] == "95.10% +- 0.80%"
    assert malaria[column["sensitivity"]] == "94.33% +- 2.00%" and malaria[column["specificity"]] == "95.50% +- 1.00%"
    assert malaria[column["accuracy at 0.5"]] == "92.58% +- 1.24%" and malaria[column["ROC AUC"]] == "0.983 +- 0.005"
    assert len(malaria) == len(column) and len(rows["pneumonia"]) == len(column)
    baseline = column["disease-blind baseline: ROC AUC"]
    assert malaria[baseline] == "-" and rows["pneumonia"][baseline] == "0.807 +- 0.028"
    rows = {name: " | ".join(cells) for name, cells in rows.items()}
    assert "20,518 / 147, 5" in rows["malaria"] and "epochs: 12 vs 20" in rows["malaria"]
    assert "accuracy >= 97.5%, AUC >= 0.995" in rows["malaria"] and "- / 95.6%" in rows["malaria"]
    assert "not cross-validated" in rows["pneumonia"] and "59.5% / 99.5%" in rows["pneumonia"]


def test_the_results_table_says_how_many_networks_an_ensemble_trained(tmp_path: Path) -> None:
    members = [
        EnsembleMember(version=version, architecture="paper_cnn", recipe="medscan", best_epoch=3, seconds=60)
        for version in (4, 5)
    ]
    write_version(tmp_path, "pneumonia", ensemble_of=members)
    write_version(tmp_path, "malaria")
    rows = {line.split(" | ")[0].strip("| "): line for line in table(tmp_path).splitlines()[2:]}
    assert "(2 networks, 0 epochs in all)" in rows["pneumonia"]
    assert "networks" not in rows["malaria"] and "(0 epochs)" in rows["malaria"]


def test_the_generated_blocks_are_rewritten_from_the_cards_and_the_rest_is_kept(tmp_path: Path) -> None:
    from tests.conftest import FIXTURE_GENERALISATION
    from training.evaluation.results_table import write_generated

    models = tmp_path / "models"
    folder = models / "breast_cancer" / "2"
    folder.mkdir(parents=True)
    card = fixture_card("breast_cancer", 2, InputSpec(50, 50, ColourMode.GRAYSCALE),
                        generalisation=FIXTURE_GENERALISATION, modality="breast_ultrasound")  # fmt: skip
    write_card(card, folder / "metadata.json")
    readme, page, plain = tmp_path / "README.md", tmp_path / "models.md", tmp_path / "other.md"
    readme.write_text("intro\n<!-- generated: glance -->\nstale\n<!-- end generated -->\noutro\n")
    page.write_text("# Models\n<!-- generated: tables -->\n<!-- end generated -->\n## History\n")
    plain.write_text("no markers\n")
    assert write_generated(models, (readme, page, plain)) == [readme, page]
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "stale" not in text
    assert "| breast_cancer | breast ultrasound | 2 | 0.500, " in text and "Cairo: 0.712" in text
    sites = page.read_text()
    assert (
        "| breast_cancer | 2 | Cairo | 600 | 0.931 | 0.712 (0.650-0.770) | 95.1% / 30.2% | 0.043 | 33.3% / 5.0% |"
        in sites
    )
    assert "| breast_cancer | 2 | Recife | 900 | 0.884 | not measured |" in sites and sites.endswith("## History\n")
    assert write_generated(models, (readme, page, plain)) == []  # a second run changes nothing

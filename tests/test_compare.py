"""The paper's comparison: the report writer, and the command end to end on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_synthetic_dataset
from training.experiments.compare import report_markdown, write_report


def fake_comparison() -> dict:
    summary = {
        m: {"mean": 0.9, "std": 0.01} for m in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")
    }
    arch = {
        "summary": summary,
        "rounds": [],
        "parameters": 1234,
        "train_ms_per_image_epoch": 1.5,
        "inference_ms_per_image": 0.2,
        "roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]},
    }
    return {
        "disease": "malaria",
        "folds": 3,
        "seed": 42,
        "input": [72, 72, 1],
        "images": 900,
        "groups": 60,
        "subset": 1000,
        "per_group": None,
        "recipe": {"name": "medscan", "epochs": 5, "batch_size": 64},
        "weights": "none",
        "architectures": {"paper_cnn": arch, "resnet50": arch},
        "seconds": 600,
        "machine": "x86_64, 2 cores",
    }


def test_report_writer_makes_its_files_from_a_small_result(tmp_path: Path) -> None:
    write_report(fake_comparison(), tmp_path)
    assert json.loads((tmp_path / "compare.json").read_text())["disease"] == "malaria"
    for plot in ("roc.png", "metrics.png"):
        with Image.open(tmp_path / plot) as image:
            assert image.format == "PNG" and image.width > 200
    report = (tmp_path / "README.md").read_text()
    assert "| paper_cnn | 90.00 +- 1.00% |" in report and "| 1,234 |" in report
    assert "Table 2" in report and "98.43%" in report and "95.6%" in report  # the paper's figures beside ours
    assert "no patient is on two sides" in report


def test_report_mentions_the_subset_only_when_there_is_one() -> None:
    comparison = fake_comparison() | {"subset": None}
    assert "grouped subset" not in report_markdown(comparison)
    assert "at most 12 of each group" in report_markdown(comparison | {"per_group": 12})


@pytest.mark.slow
def test_compare_runs_every_architecture_on_the_same_folds(tmp_path: Path) -> None:
    from training.cli import main

    data = write_synthetic_dataset(tmp_path / "data", per_class=18, size=40)
    code = main(
        [
            "compare",
            "malaria",
            "--data",
            str(data),
            "--archs",
            "paper_cnn",
            "vgg16",
            "--folds",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--report-dir",
            str(tmp_path / "reports"),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "reports" / "malaria" / "compare.json").read_text())
    assert set(result["architectures"]) == {"paper_cnn", "vgg16"}
    folds = {
        arch: [(r["fold"], r["n_evaluated"]) for r in res["rounds"]] for arch, res in result["architectures"].items()
    }
    assert folds["paper_cnn"] == folds["vgg16"] and len(folds["vgg16"]) == 3  # the same folds for each
    assert result["input"][0] >= 50
    assert (tmp_path / "reports" / "malaria" / "README.md").exists()


def test_a_run_in_parts_keeps_what_an_identical_earlier_run_measured(tmp_path: Path) -> None:
    from training.experiments.compare import _earlier_results

    earlier = fake_comparison()
    write_report(earlier, tmp_path)
    same = {key: value for key, value in earlier.items() if key != "architectures"}
    assert set(_earlier_results(tmp_path / "compare.json", same)) == {"paper_cnn", "resnet50"}
    assert _earlier_results(tmp_path / "compare.json", same | {"folds": 5}) == {}
    assert _earlier_results(tmp_path / "compare.json", same | {"per_group": 10}) == {}


def test_the_total_time_counts_every_architecture_also_those_kept_from_an_earlier_part() -> None:
    from training.experiments.compare import _arch_seconds

    assert _arch_seconds({"seconds": 300.0, "rounds": []}) == 300.0
    older = {"rounds": [{"seconds": 100.0, "predict_seconds": 2.0}, {"seconds": 50.0, "predict_seconds": 1.0}]}
    assert _arch_seconds(older) == 153.0

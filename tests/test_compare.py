"""The paper's comparison: the report writer, and the command end to end on tiny synthetic data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
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


def test_two_folds_are_refused_with_a_reason_before_any_training(tmp_path: Path, capsys) -> None:
    """Two folds leave nothing to train on once one is held out and the next validates; this crashed inside
    TensorFlow (an empty shuffle buffer) instead of saying why."""
    from training.cli import main

    data = write_synthetic_dataset(tmp_path / "data", per_class=18, size=40)
    arguments = ["--data", str(data), "--archs", "paper_cnn", "--folds", "2", "--report-dir", str(tmp_path / "r")]
    assert main(["compare", "malaria", *arguments]) == 2
    assert "at least 3 folds" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing half-written


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
            "paper_cnn_pooled",  # a second network; an ImageNet one (VGG16: +60 s) adds nothing to what is tested
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
    assert set(result["architectures"]) == {"paper_cnn", "paper_cnn_pooled"}
    folds = {
        arch: [(r["fold"], r["n_evaluated"]) for r in res["rounds"]] for arch, res in result["architectures"].items()
    }
    assert folds["paper_cnn"] == folds["paper_cnn_pooled"] and len(folds["paper_cnn"]) == 3  # the same folds for each
    assert result["input"][0] >= 50
    assert (tmp_path / "reports" / "malaria" / "README.md").exists()


def fake_round(trained: list[str]):
    """Stands in for training one round: records which architecture was trained; takes 0.1 s, says 10 s."""
    import time
    from types import SimpleNamespace

    from training.experiments.crossval import METRICS, RoundResult

    def evaluate_round(options, spec, recipe, pool, fold, folds, start=None):
        trained.append(options.arch)
        time.sleep(0.1)
        _, _, evaluated = pool.round(fold, folds)
        labels = pool.labels[evaluated]
        scores = np.stack([1.0 - labels, labels], axis=1)  # always right
        result = RoundResult(
            fold, 10, 5, int(evaluated.sum()), 1, 9.0, dict.fromkeys(METRICS, 1.0), 1, predict_seconds=1.0
        )
        return result, labels, scores, SimpleNamespace(model=SimpleNamespace(count_params=lambda: 99))

    return evaluate_round


@pytest.fixture
def faked_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """compare() on a small synthetic set with fake rounds: (run it, the architectures trained, in order)."""
    from training.experiments import compare as module
    from training.release.train import options_for

    trained: list[str] = []
    monkeypatch.setattr(module, "evaluate_round", fake_round(trained))
    data = write_synthetic_dataset(tmp_path / "data", per_class=12, size=48)
    options = options_for("malaria", data, tmp_path / "models", epochs=1)

    def run(archs: list[str], **changes) -> dict:
        return module.compare(replace(options, **changes), archs, folds=3, report_dir=tmp_path / "reports")

    return run, trained


def test_a_run_in_parts_trains_only_what_an_identical_earlier_run_did_not_and_counts_all_time(faked_compare) -> None:
    run, trained = faked_compare
    run(["paper_cnn"])
    assert trained == ["paper_cnn"] * 3
    second = run(["paper_cnn", "vgg16"])
    assert trained[3:] == ["vgg16"] * 3  # the earlier part's architecture is kept, not trained again
    assert set(second["architectures"]) == {"paper_cnn", "vgg16"}
    # wall-clock time of both parts (about 0.3 s each), not the rounds' own 3 x 10 s each
    assert second["seconds"] == pytest.approx(0.6, abs=0.15)

    run(["paper_cnn"], seed=7)
    assert trained[6:] == ["paper_cnn"] * 3  # other settings: nothing earlier applies


def test_the_total_time_of_an_older_report_counts_its_training_and_prediction(faked_compare, tmp_path: Path) -> None:
    run, _ = faked_compare
    first = run(["paper_cnn"])
    del first["architectures"]["paper_cnn"]["seconds"]  # reports from before wall-clock time: rounds' times only
    (tmp_path / "reports" / "malaria" / "compare.json").write_text(json.dumps(first))
    second = run(["paper_cnn", "vgg16"])
    older_seconds = 3 * (9.0 + 1.0)  # three rounds of training and prediction
    assert second["seconds"] == pytest.approx(older_seconds + 0.3, abs=0.15)

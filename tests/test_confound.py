"""The confound check: a classifier blind to lesions, on global statistics, measured on held-out groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from app.contract.model_card import read_card, write_card
from app.contract.preprocessing import ColourMode, InputSpec
from tests.model_fixtures import fixture_card
from training.experiments.confound import FEATURES, global_statistics, out_of_fold_auc


def test_statistics_see_colour_and_border_not_detail() -> None:
    dark_border = np.zeros((2, 20, 20, 3), np.uint8)
    dark_border[:, 4:16, 4:16] = 200
    features = global_statistics(dark_border)
    assert features.shape == (2, len(FEATURES))
    named = dict(zip(FEATURES, features[0], strict=True))
    assert named["frame_mean"] == 0 and named["centre_mean"] > 0.7 and named["dark_share"] > 0.6
    gray = global_statistics(np.full((1, 10, 10, 1), 51, np.uint8))[0]  # one channel counts as all three
    assert np.allclose(gray[:3], 0.2) and np.allclose(gray[3:6], 0, atol=1e-6)


def test_separable_statistics_give_a_high_auc_and_noise_gives_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    groups = np.array([f"g{i // 2}" for i in range(400)])
    noise = rng.normal(size=(400, 4))
    assert 0.35 < out_of_fold_auc(noise, labels, groups)["roc_auc"] < 0.65
    confounded = noise + (labels == 0)[:, None] * 1.5
    assert out_of_fold_auc(confounded, labels, groups)["roc_auc"] > 0.9


def test_the_command_measures_a_data_set_whose_classes_differ_in_border(tmp_path: Path, capsys) -> None:
    from training.cli import main

    rng = np.random.default_rng(1)
    for class_name, border in (("infected", 0), ("uninfected", 60)):
        folder = tmp_path / "data" / "eyes" / class_name
        folder.mkdir(parents=True)
        for index in range(30):
            pixels = np.full((40, 40, 3), border, np.uint8)
            pixels[6:34, 6:34] = rng.integers(90, 200, size=(28, 28, 3))
            Image.fromarray(pixels).save(folder / f"{class_name}{index}.png")
    code = main(
        [
            "confound",
            "eyes",
            "--data",
            str(tmp_path / "data"),
            "--report-dir",
            str(tmp_path / "reports"),
            "--image-size",
            "32",
            "--colour-mode",
            "rgb",
        ]
    )
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["roc_auc"] > 0.95 and answer["images"] == 60 and answer["enhancement"] == "none"
    saved = json.loads((tmp_path / "reports" / "eyes" / "confound.json").read_text())
    assert set(saved) == {"none-32px"}

    # a version fed those pixels gets the figure in its card; one fed other pixels is refused, card untouched
    for version, colour_mode in ((1, ColourMode.RGB), (2, ColourMode.GRAYSCALE)):
        folder = tmp_path / "models" / "eyes" / str(version)
        folder.mkdir(parents=True)
        write_card(fixture_card("eyes", version, InputSpec(32, 32, colour_mode)), folder / "metadata.json")
    record = ["record-confound", "eyes", "--report-dir", str(tmp_path / "reports"), "--out", str(tmp_path / "models")]
    before = (tmp_path / "models" / "eyes" / "2" / "metadata.json").read_bytes()
    assert main(record) == 2
    assert "no check of the pixels version 2 is fed ([32, 32, 1]" in capsys.readouterr().err
    assert (tmp_path / "models" / "eyes" / "2" / "metadata.json").read_bytes() == before
    assert main([*record, "--version", "1"]) == 0
    capsys.readouterr()
    recorded = read_card(tmp_path / "models" / "eyes" / "1" / "metadata.json").source_confound
    assert recorded is not None and recorded.roc_auc == answer["roc_auc"] and recorded.images == 60
    assert recorded.report.endswith("reports/eyes/confound.json")

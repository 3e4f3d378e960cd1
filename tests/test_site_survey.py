"""`medscan estimate-prevalence`: a site's prevalence from its unlabelled images, answered as the service answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cli
from app.prevalence import estimate_prevalence
from app.settings import get_settings
from tests.images import gradient, image_bytes


@pytest.fixture
def site_images(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    (folder / "day2").mkdir(parents=True)
    for index in range(6):
        where = folder / ("day2" if index % 2 else "")
        (where / f"{index}.png").write_bytes(image_bytes(gradient(40 + 7 * index, 50, "L")))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def run(monkeypatch, trust_models: Path, capsys):
    monkeypatch.setenv("MEDSCAN_MODELS_DIR", str(trust_models))
    get_settings.cache_clear()

    def command(*args: str) -> tuple[int, str, str]:
        code = cli.main(["estimate-prevalence", *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield command
    get_settings.cache_clear()


def test_the_estimate_is_that_of_the_served_answers(run, site_images: Path, trust_client) -> None:
    code, out, _ = run("malaria", str(site_images))
    assert code == 0
    scores = [
        trust_client.post("/predict/malaria", files={"file": (path.name, path.read_bytes(), "image/png")}).json()[
            "score"
        ]
        for path in sorted(site_images.rglob("*.png"))
    ]
    expected = estimate_prevalence(scores, calibrated_at=0.5)  # the fixture's validation part: half infected
    assert "malaria v1: 6 images used (0 out of distribution and 1 unreadable left out)" in out
    assert f"estimated prevalence {expected:.3f} (the model is calibrated at 0.500)" in out
    assert f"MEDSCAN_SITE_PREVALENCE='{{\"malaria\": {round(expected, 3)}}}'" in out


@pytest.mark.parametrize(
    ("disease", "folder", "words"),
    [
        ("brain_tumor", "site", "every image is out of distribution for the brain_tumor model"),
        ("malaria", "nowhere", "no files to read"),
        ("lupus", "site", "no version of the lupus model"),
    ],
)
def test_what_cannot_be_estimated_is_exit_2_saying_why(run, site_images: Path, disease, folder, words) -> None:
    code, out, err = run(disease, str(site_images.parent / folder))
    assert code == 2 and out == "" and words in err


def test_a_folder_without_images_is_exit_2(run, tmp_path: Path) -> None:
    (tmp_path / "empty" / "a.txt").parent.mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    code, _, err = run("malaria", str(tmp_path / "empty"))
    assert code == 2 and "none of its 1 files is an image" in err

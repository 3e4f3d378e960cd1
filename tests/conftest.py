"""Shared fixtures: synthetic labelled folders and small exported models (never the shipped ones)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from app.contract.model_card import (
    CrossValidation,
    EnsembleMember,
    Generalisation,
    GradeFigure,
    ScreeningCrossValidation,
    SiteFigures,
    SourceConfound,
)
from tests.images import blob

SHARED_DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
needs_shared_data = pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="../shared/datasets is not on this machine")


def write_synthetic_dataset(
    root: Path,
    disease: str = "malaria",
    *,
    per_class: int = 24,
    size: int = 32,
    per_group: int = 3,
    manifest: bool = True,
) -> Path:
    """<root>/<disease>/{infected,uninfected}/*.png plus a MANIFEST.csv grouping files per 'patient'."""
    rows = []
    for label, class_name in enumerate(("infected", "uninfected")):
        folder = root / disease / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            name = f"p{label}{index // per_group:02d}_cell{index}.png"
            blob(size, infected=label == 0, seed=label * 1000 + index).save(folder / name)
            rows.append({"path": f"{disease}/{class_name}/{name}", "group": f"patient-{label}-{index // per_group}"})
    if manifest:
        with (root / "MANIFEST.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["path", "sha1", "group", "note", "source_repo", "source_commit", "source_path"]
            )
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {**row, "sha1": "", "note": "", "source_repo": "", "source_commit": "", "source_path": ""}
                )
    return root


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Export an untrained paper CNN with a valid card into a models folder; returns the version folder."""
    from tests.model_fixtures import export_untrained

    def make(models_dir: Path | None = None, disease: str = "malaria", **kwargs) -> Path:
        models_dir = models_dir or tmp_path_factory.mktemp("models")
        return export_untrained(models_dir, disease, **kwargs)

    return make


@pytest.fixture(scope="session")
def served_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small models (grayscale malaria, RGB retinopathy) and one broken folder."""
    from tests.model_fixtures import export_untrained

    models_dir = tmp_path_factory.mktemp("served-models")
    export_untrained(models_dir, "malaria", colour_mode="grayscale", size=50)
    export_untrained(models_dir, "retinopathy", colour_mode="rgb", size=48)
    broken = models_dir / "pneumonia" / "1"
    broken.mkdir(parents=True)
    (broken / "metadata.json").write_text("{not json")
    return models_dir


@pytest.fixture(scope="session")
def service_settings(served_models_dir: Path):
    from app.settings import Settings

    return Settings(
        models_dir=served_models_dir, max_upload_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000, max_batch_size=8
    )


@pytest.fixture(scope="session")
def client(service_settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(service_settings), raise_server_exceptions=False) as test_client:
        yield test_client


TEMPERATURE, BIAS, THRESHOLD = 2.0, -0.7, 0.3


FIXTURE_CROSS_VALIDATION = CrossValidation(
    folds=5,
    seed=42,
    images=2000,
    groups=140,
    input=[50, 50, 1],
    architecture="paper_cnn",
    recipe={},
    differences=["epochs: 12 vs 20"],
    seconds=1.0,
    report="reports/crossval/fixture.json",
    summary={"accuracy": {"mean": 0.9258, "std": 0.0124}, "roc_auc": {"mean": 0.9834, "std": 0.005}},
    screening=ScreeningCrossValidation(
        target_sensitivity=0.95,
        summary={"accuracy": {"mean": 0.9512, "std": 0.008}, "sensitivity": {"mean": 0.9433, "std": 0.02}},
    ),
)


FIXTURE_CONFOUND = SourceConfound(
    features=["mean_r", "std_r"],
    input=[48, 48, 1],
    images=200,
    groups=100,
    roc_auc=0.81,
    fold_mean=0.807,
    fold_std=0.028,
    report="reports/x/confound.json",
)


FIXTURE_ENSEMBLE = [
    EnsembleMember(version=4, architecture="paper_cnn", recipe="medscan", best_epoch=20, seconds=400.0),
    EnsembleMember(
        version=5,
        architecture="paper_cnn",
        recipe="medscan",
        initial_weights="backbones/x.keras",
        best_epoch=9,
        seconds=300.0,
    ),
]


HELD_OUT = {"roc_auc": 0.712, "intervals": {"roc_auc": [0.65, 0.77]}, "accuracy": 0.6,
            "screening": {"threshold": 0.2, "sensitivity": 0.951, "specificity": 0.302},
            "ece": {"temperature": 1.2, "before": 0.1, "after": 0.043},
            "out_of_distribution": 0.05, "site_shift": {"percentile": 90.0, "flagged": 0.333}}  # fmt: skip
FIXTURE_GENERALISATION = Generalisation(sites=[
    SiteFigures(site="Cairo", n_images=600, within={"roc_auc": 0.931}, held_out=HELD_OUT),
    SiteFigures(site="Recife", n_images=900, within={"roc_auc": 0.884}, held_out=None),
], seconds=100.0, report="reports/cross_site/fixture.json")  # fmt: skip
FIXTURE_GRADES = [GradeFigure(grade=0, label="uninfected", n_images=40, flagged_infected=0.25),
                  GradeFigure(grade=2, label="infected", n_images=10, flagged_infected=0.8)]  # fmt: skip


@pytest.fixture(scope="session")
def trust_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models with a trust layer (malaria: Platt scaling and threshold set; brain_tumor: every image out
    of distribution) and one exported before it (breast_cancer)."""
    from tests.model_fixtures import export_legacy, export_untrained

    models = tmp_path_factory.mktemp("trust-models")
    export_untrained(
        models,
        "malaria",
        size=50,
        temperature=TEMPERATURE,
        bias=BIAS,
        threshold=THRESHOLD,
        ood_threshold=1e6,
        cross_validation=FIXTURE_CROSS_VALIDATION,
    )
    export_untrained(
        models,
        "brain_tumor",
        size=48,
        ood_threshold=0.0,  # every image is out of distribution
        modality="brain_mri",
        flips=("horizontal",),
        source_confound=FIXTURE_CONFOUND,
        training_settings={"pretraining": {"pretrained_on": {"malaria": 5000, "pneumonia": 4458}}},
        ensemble_of=FIXTURE_ENSEMBLE,
        generalisation=FIXTURE_GENERALISATION,
        by_grade=FIXTURE_GRADES,
    )
    export_legacy(models, "breast_cancer", size=50)
    return models


@pytest.fixture(scope="session")
def trust_client(trust_models: Path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(models_dir=trust_models, max_batch_size=8, max_images_per_request=4)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client

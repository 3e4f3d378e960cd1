"""Building small exported models for tests, through the real export path."""

from __future__ import annotations

from pathlib import Path

import keras

from app.model_card import (
    DataCard, InputCard, ModelCard, SplitCounts, TestMetrics, TrainingCard, write_card,
)
from app.model_store import METADATA_FILE
from app.preprocessing import ColourMode, InputSpec
from training.export import export_version
from training.model import make_model


def fixture_card(disease: str, version: int, spec: InputSpec) -> ModelCard:
    counts = {"infected": 1, "uninfected": 1}
    return ModelCard(
        disease=disease, version=version, description="test fixture, untrained",
        input=InputCard.from_spec(spec), preprocessing="test", output="test",
        metrics=TestMetrics(n_images=2, accuracy=0.5, sensitivity=0.5, specificity=0.5, precision=0.5,
                            recall=0.5, f1=0.5, roc_auc=0.5, confusion_matrix=[[1, 0], [1, 0]]),
        data=DataCard(source="synthetic", split="none",
                      counts=SplitCounts(train=counts, validation=counts, test=counts, groups={})),
        training=TrainingCard(recipe="none", settings={}, seed=0, epochs_run=0, best_epoch=0, seconds=0,
                              machine="test"),
        frameworks={}, created="2026-01-01T00:00:00+00:00",
    )


def export_untrained(models_dir: Path, disease: str, *, colour_mode: str = "grayscale", size: int = 50,
                     seed: int = 1) -> Path:
    keras.utils.set_random_seed(seed)
    spec = InputSpec(height=size, width=size, colour_mode=ColourMode(colour_mode))
    model = make_model(spec)

    def write_extras(folder: Path, version: int) -> None:
        write_card(fixture_card(disease, version, spec), folder / METADATA_FILE)

    return export_version(model, models_dir, disease, write_extras=write_extras)

"""Building small exported models for tests, through the real export path."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import keras

from app.contract.model_card import (
    Calibration,
    CrossValidation,
    DataCard,
    EnsembleMember,
    Generalisation,
    GradeFigure,
    InputCard,
    ModelCard,
    OperatingPoint,
    OutOfDistribution,
    Screening,
    SourceConfound,
    SplitCounts,
    TestMetrics,
    TrainingCard,
)
from app.contract.preprocessing import ColourMode, Enhancement, InputSpec
from training.networks.model import make_model
from training.networks.servable import write_savedmodel
from training.release.export import stage_version
from training.release.trust import random_image_statistics


def fixture_card(
    disease: str,
    version: int,
    spec: InputSpec,
    *,
    temperature: float = 1.0,
    bias: float = 0.0,
    threshold: float = 0.5,
    ood_threshold: float | None = 1e6,
    cross_validation: CrossValidation | None = None,
    source_confound: SourceConfound | None = None,
    training_settings: dict[str, object] | None = None,
    ensemble_of: list[EnsembleMember] | None = None,
    validation_quantiles: list[float] | None = None,
    generalisation: Generalisation | None = None,
    by_grade: list[GradeFigure] | None = None,
    modality: str | None = None,
) -> ModelCard:
    counts = {"infected": 1, "uninfected": 1}
    return ModelCard(
        disease=disease,
        version=version,
        description="test fixture, untrained",
        input=InputCard.from_spec(spec),
        preprocessing="test",
        output="test",
        metrics=TestMetrics(
            n_images=2,
            accuracy=0.5,
            sensitivity=0.5,
            specificity=0.5,
            precision=0.5,
            recall=0.5,
            f1=0.5,
            roc_auc=0.5,
            confusion_matrix=[[1, 0], [1, 0]],
        ),
        calibration=Calibration(
            method="platt" if bias else "temperature", temperature=temperature, bias=bias, fitted_on="test"
        ),
        screening=Screening(
            target_sensitivity=0.95,
            threshold=threshold,
            validation=OperatingPoint(threshold=threshold, sensitivity=1, specificity=0),
        ),
        out_of_distribution=(
            OutOfDistribution(
                method="test",
                fitted_on="test",
                threshold=ood_threshold,
                threshold_quantile=0.975,
                validation_quantiles=validation_quantiles,
            )
            if ood_threshold is not None
            else None
        ),
        data=DataCard(
            source="synthetic",
            split="none",
            counts=SplitCounts(train=counts, validation=counts, test=counts, groups={}),
        ),
        training=TrainingCard(
            recipe="none",
            settings=training_settings or {},
            seed=0,
            epochs_run=0,
            best_epoch=0,
            seconds=0,
            machine="test",
        ),
        frameworks={},
        created="2026-01-01T00:00:00+00:00",
        cross_validation=cross_validation,
        source_confound=source_confound,
        ensemble_of=ensemble_of or [],
        generalisation=generalisation,
        by_grade=by_grade or [],
        modality=modality,
    )


def export_untrained(
    models_dir: Path,
    disease: str,
    *,
    colour_mode: str = "grayscale",
    size: int = 50,
    seed: int = 1,
    model: keras.Model | None = None,
    flips: tuple[str, ...] = (),
    enhancement: str = "none",
    kernel_bits: int = 32,
    **card_options,
) -> Path:
    """An exported version with all three signatures (with test-time `flips` if given, kernels stored at
    `kernel_bits`); OOD statistics from random images."""
    keras.utils.set_random_seed(seed)
    spec = InputSpec(height=size, width=size, colour_mode=ColourMode(colour_mode), enhancement=Enhancement(enhancement))
    with stage_version(models_dir, disease) as staged:
        if model is None:  # the untrained network of this seed: exported once per test process, then copied
            key = (spec, seed, tuple(flips), kernel_bits)
            if key not in _EXPORTED:
                _EXPORTED[key] = _export_once(spec, seed, tuple(flips), kernel_bits)
            shutil.copytree(_EXPORTED[key], staged.folder, dirs_exist_ok=True)
        else:
            write_savedmodel(model, spec, random_image_statistics(model, spec, seed), staged.folder, flips, kernel_bits)
        card = fixture_card(disease, 0, spec, **card_options).model_copy(
            update={"test_time_flips": list(flips), "kernel_bits": kernel_bits}
        )
        return staged.publish(card)


# (spec, seed, flips, kernel bits) -> a SavedModel folder. Writing one traces all three signatures (seconds
# each), and the suite asks for the same few untrained networks over sixty times.
_EXPORTED: dict[tuple[InputSpec, int, tuple[str, ...], int], Path] = {}


def _export_once(spec: InputSpec, seed: int, flips: tuple[str, ...], kernel_bits: int) -> Path:
    keras.utils.set_random_seed(seed)
    model = make_model(spec)
    folder = Path(tempfile.mkdtemp(prefix="medscan-untrained-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    write_savedmodel(model, spec, random_image_statistics(model, spec, seed), folder, flips, kernel_bits)
    return folder


def export_legacy(models_dir: Path, disease: str, *, size: int = 50, seed: int = 1) -> Path:
    """A version as exported before the trust layer: serving_default only, a card without its sections."""
    keras.utils.set_random_seed(seed)
    spec = InputSpec(height=size, width=size, colour_mode=ColourMode.GRAYSCALE)
    with stage_version(models_dir, disease) as staged:
        make_model(spec).export(str(staged.folder / "savedmodel"), format="tf_saved_model", verbose=False)
        for item in (staged.folder / "savedmodel").iterdir():
            item.rename(staged.folder / item.name)
        (staged.folder / "savedmodel").rmdir()
        card = fixture_card(disease, 0, spec, ood_threshold=None).model_copy(
            update={"calibration": None, "screening": None, "format_version": 1}
        )
        return staged.publish(card)


def export_modality_check(models_dir: Path, minimum_probability: float = 0.5) -> Path:
    """A modality check that tells images apart by colour alone: reddish -> blood_smear_cell, bluish -> other,
    anything else near even between the two (and far from the other kinds)."""
    import numpy as np

    from app.contract.modality import SIDE, Modality, ModalityCard
    from training.modality.check import publish_check

    classes = [*(kind for kind in Modality if kind is not Modality.OTHER), Modality.OTHER]
    inputs = keras.Input((SIDE, SIDE, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(len(classes), activation="softmax")
    model = keras.Model(inputs, dense(mean))
    kernel = np.zeros((3, len(classes)), np.float32)
    kernel[:, classes.index(Modality.BLOOD_SMEAR_CELL)] = [20.0, 0.0, -20.0]
    kernel[:, classes.index(Modality.OTHER)] = [-20.0, 0.0, 20.0]
    bias = np.full(len(classes), -20.0, np.float32)
    bias[[classes.index(Modality.BLOOD_SMEAR_CELL), classes.index(Modality.OTHER)]] = 0.0
    dense.set_weights([kernel, bias])
    card = ModalityCard(
        version=0, classes=classes, architecture="test: mean colour", minimum_probability=minimum_probability
    )
    return publish_check(model, card, models_dir)

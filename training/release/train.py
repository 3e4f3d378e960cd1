"""Train, evaluate and export one disease model, top to bottom."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from app.contract import preprocessing
from app.contract.machine import describe_machine
from app.contract.model_card import (
    DataCard,
    InputCard,
    ModelCard,
    SplitCounts,
    SplitSpec,
    TestMetrics,
    TrainingCard,
)
from training.data.config import DiseaseConfig, DiseaseFlags, Recipe, describe_disease, samples_of, sites_of
from training.data.pipeline import DecodedSet, decode_split, kept_samples
from training.data.samples import Split, check_trainable, manifest_notes, split_as
from training.evaluation.assessment import PROBE_LIMIT
from training.networks.architectures import PAPER_CNN
from training.networks.distributed import StrategyName, fit_distributed, is_chief, make_strategy, task
from training.networks.fitting import FittedModel, fit_model
from training.networks.pretrain import backbone_for, pretraining_record
from training.release.publish import OUTPUT_DESCRIPTION, release, release_data, split_counts

log = logging.getLogger("training")
# Replaced by the measured figures before a card is published (training/release/publish.py).
PENDING_METRICS = TestMetrics(
    n_images=0,
    accuracy=0,
    sensitivity=0,
    specificity=0,
    precision=0,
    recall=0,
    f1=0,
    roc_auc=None,
    confusion_matrix=[[0, 0], [0, 0]],
)


@dataclass(frozen=True)
class TrainOptions:
    config: DiseaseConfig  # the disease, described once at the command's edge (`options_for`)
    data_dir: Path
    models_dir: Path
    recipe: str = "medscan"
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: bool | None = None  # None: the recipe's own choice
    stain_jitter: bool | None = None  # None: the recipe's own choice
    intensity_jitter: bool | None = None  # None: the recipe's own choice
    aspect_jitter: bool | None = None  # None: the recipe's own choice
    frozen_backbone: bool | None = None  # None: the recipe's own choice
    fine_tune_from: str | None = None  # None: the recipe's own choice (training/networks/top_finetune.py)
    kernel_bits: int | None = None  # None: the recipe's own choice (training/networks/stored_kernels.py)
    dihedral: bool | None = None  # None: the recipe's own choice
    seed: int = 42  # the split and the cross-validation folds; and, without init_seed, the training below
    init_seed: int | None = None  # initial weights, shuffling, augmentation; runs that differ only in it share
    # their test part and folds, so their models can form a seed ensemble (training/experiments/ensemble.py)
    target_sensitivity: float | None = None  # None: the disease's (training/diseases/<name>.json)
    arch: str = PAPER_CNN
    weights: str | None = None  # None: the recipe's start; "none": from scratch; "imagenet"; or a local weights file
    backbones_dir: Path = Path("backbones")  # where a recipe's pretrained start is kept (training/networks/pretrain.py)
    strategy: str = "default"  # tf.distribute: default, mirrored or multiworker (training/networks/distributed.py)
    checkpoint_dir: Path | None = None  # per-epoch checkpoints to resume from (mirrored, multiworker)
    probe_limit: int = PROBE_LIMIT  # images of each other organ the release measures its OOD flags on
    verbose: int = 1

    @property
    def disease(self) -> str:
        return self.config.name


def options_for(
    disease: str, data_dir: Path, models_dir: Path, flags: DiseaseFlags = DiseaseFlags(), **choices: Any
) -> TrainOptions:
    """A run's options, its disease described once: the built-in record or `disease.json`, then the flags."""
    return TrainOptions(
        config=describe_disease(disease, data_dir, flags), data_dir=data_dir, models_dir=models_dir, **choices
    )


def fit_seed(options: TrainOptions) -> int:
    return options.seed if options.init_seed is None else options.init_seed


def resolve_recipe(config: DiseaseConfig, options: TrainOptions) -> Recipe:
    recipe = config.recipe(options.recipe)
    if options.epochs is not None:
        recipe = replace(recipe, epochs=options.epochs)
    if options.batch_size is not None:
        recipe = replace(recipe, batch_size=options.batch_size)
    if options.learning_rate is not None:
        recipe = replace(recipe, learning_rate=options.learning_rate)
    if options.augment is not None:
        recipe = replace(recipe, augment=options.augment)
    if options.stain_jitter is not None:
        recipe = replace(recipe, stain_jitter=options.stain_jitter)
    if options.intensity_jitter is not None:
        recipe = replace(recipe, intensity_jitter=options.intensity_jitter)
    if options.aspect_jitter is not None:
        recipe = replace(recipe, aspect_jitter=options.aspect_jitter)
    if options.dihedral is not None:
        recipe = replace(recipe, dihedral=options.dihedral)
    if options.frozen_backbone is not None:
        recipe = replace(recipe, frozen_backbone=options.frozen_backbone)
    if options.fine_tune_from is not None:
        recipe = replace(recipe, fine_tune_from=options.fine_tune_from or None)
    if options.kernel_bits is not None:
        recipe = replace(recipe, kernel_bits=options.kernel_bits)
    if options.weights is not None:  # an explicit start replaces the recipe's
        recipe = replace(recipe, pretrained_start=options.weights.endswith(".keras"))
    return recipe


def resolve_start(config: DiseaseConfig, recipe: Recipe, options: TrainOptions) -> str | None:
    """The weights training starts from: the ones asked for, else the recipe's pretrained backbone (made now
    if backbones/ has none for this input), else None (from scratch)."""
    if options.weights is not None:
        return None if options.weights == "none" else options.weights
    if recipe.pretrained_start and options.arch == PAPER_CNN:
        return str(
            backbone_for(options.disease, options.data_dir, config.spec(), options.backbones_dir, seed=options.seed)
        )
    return None


def train(options: TrainOptions) -> Path | None:
    """Train, measure and export; None on a worker that is not the chief (only the chief exports)."""
    strategy_name = StrategyName(options.strategy)
    # Made before any other TensorFlow work, as MultiWorkerMirroredStrategy requires.
    strategy = make_strategy(strategy_name) if strategy_name is not StrategyName.DEFAULT else None
    config = options.config
    recipe = resolve_recipe(config, options)
    spec = config.spec()
    start = resolve_start(config, recipe, options)
    keras.utils.set_random_seed(options.seed)

    # Data: group split, decode once into the cache.
    samples = samples_of(options.config, options.data_dir)
    split_spec = SplitSpec(seed=options.seed)
    split = split_as(samples, split_spec)
    check_trainable(split)
    log.info(
        "%s: %d images, split %s", options.disease, len(samples), {part: len(s) for part, s in split.parts().items()}
    )
    decoded = decode_split(split, spec)
    fitted = _fit(options, recipe, start, split, decoded, strategy)
    if fitted is None:
        log.info("trained as %s %d; the chief exports", *task())
        return None

    # Fit the trust layer, export, measure on the untouched test part as served, publish.
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    card = _card(options, recipe, start, split_spec, split_counts(split, decoded), fitted, replicas)
    data = release_data(options.config, split, decoded, options.data_dir, spec, options.probe_limit)
    target = release(
        fitted.model,
        spec,
        data,
        card,
        options.models_dir,
        history=fitted.history,
        target_sensitivity=options.target_sensitivity or config.screening_sensitivity,
        batch_size=recipe.batch_size,
    )
    log.info("exported %s", target)
    return target


def _fit(
    options: TrainOptions,
    recipe: Recipe,
    start: str | None,
    split: Split,
    decoded: dict[str, DecodedSet],
    strategy: tf.distribute.Strategy | None,
) -> FittedModel | None:
    """The network fitted in this process, or across the strategy's workers (None on a worker but the chief)."""
    spec = options.config.spec()
    if strategy is None:
        return fit_model(
            spec,
            recipe,
            decoded["train"],
            decoded["validation"],
            seed=fit_seed(options),
            verbose=options.verbose,
            arch=options.arch,
            initial_weights=start,
            strata=training_sites(options.config, options.data_dir, split, decoded),
        )
    fitted = fit_distributed(
        spec,
        recipe,
        decoded["train"],
        decoded["validation"],
        seed=fit_seed(options),
        strategy=strategy,
        checkpoint_dir=options.checkpoint_dir,
        arch=options.arch,
        initial_weights=start,
    )
    return fitted if is_chief() else None


def _card(
    options: TrainOptions,
    recipe: Recipe,
    start: str | None,
    split_spec: SplitSpec,
    counts: SplitCounts,
    fitted: FittedModel,
    replicas: int,
) -> ModelCard:
    """The new version's card before its figures: what was trained on what, how, and by which recipe."""
    config, spec = options.config, options.config.spec()
    settings = {
        **recipe.as_dict(),
        "architecture": options.arch,
        "initial_weights": start or "none",
        "init_seed": fit_seed(options),
        "pretraining": pretraining_record(start),
        "strategy": options.strategy,
        "replicas": replicas,
        "class_weights_used": fitted.class_weights,
        "disease_config": config.described_by,
        "selection": "lowest validation loss" if recipe.keep_best else "last epoch",
    }
    split = (
        f"by patient/slide group (MANIFEST.csv; one group per file where unknown), seed {split_spec.seed}: test "
        f"{split_spec.test_fraction:.0%} of images, validation {split_spec.validation_fraction:.0%} of the rest, "
        "stratified by class"
    )
    return ModelCard(
        disease=options.disease,
        version=0,
        description=config.description,
        modality=config.modality,
        input=InputCard.from_spec(spec),
        preprocessing=preprocessing.describe(spec),
        output=OUTPUT_DESCRIPTION,
        test_time_flips=list(config.test_time_flips),
        kernel_bits=recipe.kernel_bits,
        metrics=PENDING_METRICS,
        data=DataCard(
            source=config.source, split=split, split_spec=split_spec, counts=counts, caveats=list(config.caveats)
        ),
        training=TrainingCard(
            recipe=recipe.name,
            architecture=options.arch,
            settings=settings,
            seed=options.seed,
            epochs_run=len(fitted.history.get("loss", [])),
            best_epoch=fitted.best_epoch,
            seconds=round(fitted.seconds, 1),
            machine=describe_machine(),
        ),
        frameworks=framework_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def training_sites(
    config: DiseaseConfig, data_dir: Path, split: Split, decoded: dict[str, DecodedSet]
) -> list[str] | None:
    """The site of each readable training image, where the disease names sites (for recipe.balance_sites)."""
    if not config.sites:
        return None
    kept = kept_samples(split.train, decoded["train"])
    return sites_of(kept, manifest_notes(data_dir, kept), config.sites)


def framework_versions() -> dict[str, str]:
    import PIL

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


__all__ = ["TrainOptions", "train"]

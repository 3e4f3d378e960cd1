"""`python -m training pretrain <disease>`: the paper's CNN pretrained on every *other* data set, to start from.

The small sets (breast 663 images, retinopathy 1,880) have too few images to learn general image features
from scratch, and ImageNet weights need a download. The other four data sets hold ~35,000 images: one
network learns to tell apart the classes of all of them at once (one softmax over every disease's two
classes, i.e. multi-task with a shared trunk), at the target disease's input size, colour mode and
preparation. `--weights <backbone>.keras` then starts the target's training from those weights; only the
two-unit head is new.

The target disease's own images are never read, so no image of its patients, not even of its test part or
of a cross-validation round's held-out fold, shapes the starting point: the figures stay those of new patients.
Nor are the other data sets' test parts: the target's out-of-distribution check is measured on them
(`training.evaluation.assessment.probe_sets`), and a backbone that learned to tell exactly those images apart would
make its flag rates look better than they are on new patients of the other diseases.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from app.contract.model_card import SplitSpec
from app.contract.preprocessing import InputSpec
from training.data.pipeline import decode_samples, make_augmenter, training_batches
from training.data.samples import DataError, Sample, diseases_in, find_samples, split_as
from training.networks.model import built_adam, learning_rate_schedule, make_model

log = logging.getLogger("training")
HEAD = "scores"  # the target model's own two-unit head: the only layer not started from the backbone
RECORD_SUFFIX = ".json"
HELD_OUT = "the test part of each data set (default split)"  # the record's `held_out`: what was never read


@dataclass(frozen=True)
class PretrainOptions:
    target: str
    data_dir: Path
    spec: InputSpec
    out_dir: Path = Path("backbones")
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    per_disease: int = 5000  # images of each other data set: the biggest (malaria, 24k) must not drown the rest
    seed: int = 42
    verbose: int = 2


def pretraining_samples(data_dir: Path, target: str, per_disease: int, seed: int) -> dict[str, list[Sample]]:
    """Up to `per_disease` images of every data set in `data_dir` but `target`, drawn at random from its non-test
    part: its test part (the default split, on which other models' out-of-distribution rates are measured)
    is never read."""
    others = [disease for disease in diseases_in(data_dir) if disease != target]
    if not others:
        raise DataError(f"{data_dir} holds no data set other than {target!r} to pretrain on")
    rng = np.random.default_rng(seed)
    drawn = {}
    for disease in others:
        split = split_as(find_samples(data_dir, disease), SplitSpec())
        samples = sorted(split.train + split.validation, key=lambda sample: str(sample.path))
        if len(samples) > per_disease:
            samples = [samples[i] for i in sorted(rng.choice(len(samples), size=per_disease, replace=False))]
        drawn[disease] = samples
    return drawn


def task_labels(drawn: dict[str, list[Sample]]) -> list[Sample]:
    """One label per (disease, class): disease i's classes become 2i and 2i + 1."""
    return [
        Sample(path=s.path, label=2 * index + s.label, group=f"{disease}:{s.group}")
        for index, (disease, samples) in enumerate(drawn.items())
        for s in samples
    ]


def make_pretraining_model(spec: InputSpec, tasks: int, *, bn_momentum: float = 0.9) -> keras.Model:
    """The paper's CNN with one softmax over the classes of every pretraining data set as its head."""
    trunk = make_model(spec, bn_momentum=bn_momentum)
    outputs = layers.Dense(2 * tasks, activation="softmax", name="tasks")(trunk.get_layer("dropout_head").output)
    return keras.Model(trunk.input, outputs, name="pretrained_paper_cnn")


def pretrain(options: PretrainOptions) -> Path:
    """Train on the other data sets; write `<out>/<target>-<size>px-<colour>[-<enhancement>].keras` and its record."""
    drawn = pretraining_samples(options.data_dir, options.target, options.per_disease, options.seed)
    samples = task_labels(drawn)
    started = time.perf_counter()
    decoded = decode_samples(samples, options.spec)
    log.info(
        "pretraining on %s: %d images decoded in %.0f s", ", ".join(drawn), decoded.size, time.perf_counter() - started
    )
    keras.utils.set_random_seed(options.seed)
    # Flips and small shifts, as for any target: they cost nothing and keep the features orientation-free.
    augmenter = make_augmenter(options.spec, flip_horizontal=True, flip_vertical=True, seed=options.seed)
    batches = training_batches(
        decoded, batch_size=options.batch_size, seed=options.seed, augmenter=augmenter, classes=2 * len(drawn)
    )
    model = make_pretraining_model(options.spec, len(drawn))
    steps = options.epochs * -(-decoded.size // options.batch_size)
    model.compile(
        optimizer=built_adam(model, learning_rate_schedule(options.learning_rate, "cosine", steps)),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    started = time.perf_counter()
    history = model.fit(batches, epochs=options.epochs, verbose=options.verbose, shuffle=False)
    seconds = time.perf_counter() - started
    record = {
        "target": options.target,
        "input": list(options.spec.shape),
        "enhancement": options.spec.enhancement.value,
        "pretrained_on": {disease: len(s) for disease, s in drawn.items()},
        "held_out": HELD_OUT,
        "images": decoded.size,
        "unreadable_skipped": len(decoded.unreadable),
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "lr_schedule": "cosine",
        "seed": options.seed,
        "seconds": round(seconds, 1),
        "final_accuracy": round(float(history.history["accuracy"][-1]), 4),
    }
    path = options.out_dir / f"{backbone_name(options.target, options.spec)}.keras"
    _write_whole(model, record, path)
    log.info("pretrained backbone %s (%.0f s, training accuracy %.3f)", path, seconds, record["final_accuracy"])
    return path


def _write_whole(model: keras.Model, record: dict, path: Path) -> None:
    """The record, then the model, each renamed into place: an interrupted run leaves no backbone to start from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial.keras")
    model.save(partial)
    record_path(partial).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    record_path(partial).replace(record_path(path))
    partial.replace(path)


def backbone_for(target: str, data_dir: Path, spec: InputSpec, backbones_dir: Path, seed: int = 42) -> Path:
    """A recipe's pretrained start: the backbone kept for this disease and input, pretrained now if there is none."""
    path = backbones_dir / f"{backbone_name(target, spec)}.keras"
    if path.is_file() and (pretraining_record(path) or {}).get("held_out") == HELD_OUT:
        log.info("starting from the pretrained backbone %s", path)
        return path
    if path.is_file():
        log.info("%s was pretrained on the other data sets' test parts too: pretraining it again without", path)
    log.info("no backbone %s yet: pretraining it on the other data sets in %s", path, data_dir)
    try:
        return pretrain(PretrainOptions(target=target, data_dir=data_dir, spec=spec, out_dir=backbones_dir, seed=seed))
    except DataError as error:
        raise DataError(
            f"{error}: {target}'s recipe starts from a backbone pretrained on the other data sets; put "
            f"them beside it in --data, or train from scratch with --weights none"
        ) from None


def backbone_name(target: str, spec: InputSpec) -> str:
    enhancement = "" if spec.enhancement.value == "none" else f"-{spec.enhancement.value}"
    return f"{target}-{spec.height}px-{spec.colour_mode.value}{enhancement}"


def record_path(backbone: Path) -> Path:
    return backbone.with_suffix(RECORD_SUFFIX)


def pretraining_record(weights: str | Path | None) -> dict | None:
    """What a backbone was pretrained on (its record beside it), for cards and reports; None if not a backbone."""
    if weights in (None, "none", "imagenet"):
        return None
    record = record_path(Path(weights))
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None


def start_from_backbone(model: keras.Model, backbone_path: str | Path) -> None:
    """Copy every layer but the head from a pretrained backbone (same input) into `model`."""
    path = Path(backbone_path)
    if path.suffix != ".keras" or not path.is_file():
        raise ValueError(
            f"{path}: the paper's CNN starts from a backbone written by `python -m training pretrain` "
            f"(a .keras file), or from scratch with --weights none"
        )
    backbone = keras.saving.load_model(path, compile=False)
    if tuple(backbone.input_shape[1:]) != tuple(model.input_shape[1:]):
        raise ValueError(
            f"{path} was pretrained for inputs {backbone.input_shape[1:]}, this model takes "
            f"{model.input_shape[1:]}: pretrain again for this input size and colour mode"
        )
    for layer in model.layers:
        if layer.name != HEAD and layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())

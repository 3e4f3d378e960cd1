"""What every training command shares: the `Command` record the registry lists, the arguments several commands
take, and the command line's edge, where a disease is described once (`train_options`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.contract.preprocessing import Enhancement
from training.evaluation.assessment import PROBE_LIMIT
from training.networks.architectures import ARCHITECTURES
from training.networks.stored_kernels import STORED_BITS


@dataclass(frozen=True)
class Command:
    """One `python -m training <name>` command: its arguments beside its code. `run` returns the answer printed on
    stdout; it imports what it needs itself, so that --help and argument errors do not wait for TensorFlow."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], str]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return value


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder holding <disease>/{infected,uninfected}/")
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")


def add_version(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    """A command about one exported version of one disease."""
    parser.add_argument("disease")
    if data:
        add_data(parser)
    else:
        parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")
    parser.add_argument("--version", type=positive, default=None, help="model version (default: the latest)")


def version_choices(args: argparse.Namespace) -> dict[str, Any]:
    """What `add_version` parsed, as the keyword arguments of the functions about one version."""
    return {"data_dir": args.data, "models_dir": args.out, "version": args.version}


def export_choices(args: argparse.Namespace) -> dict[str, Any]:
    """What `add_export_choices` parsed, as keyword arguments."""
    return {
        "target_sensitivity": args.target_sensitivity,
        "test_time_flips": args.test_time_flips,
        "kernel_bits": args.kernel_bits,
        "probe_limit": args.probe_limit,
    }


def add_report_dir(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument("--report-dir", type=Path, default=Path(default), help=what)


def add_target_sensitivity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target-sensitivity",
        type=fraction,
        default=None,
        help="sensitivity the screening threshold must reach on the validation part (default: the "
        "disease's, chosen by cross-validation, 0.95 where none was; calibrate: the version's; "
        "ensemble: the first member's)",
    )


def add_export_choices(parser: argparse.ArgumentParser, default_flips: str) -> None:
    """The operating point and test-time flips of a version made from published ones."""
    add_target_sensitivity(parser)
    parser.add_argument(
        "--test-time-flips",
        nargs="*",
        choices=("horizontal", "vertical"),
        default=None,
        help=f"answer for the image and these flips of it together (default: {default_flips}; "
        "give it with no value to export without flips)",
    )
    parser.add_argument(
        "--kernel-bits",
        type=int,
        choices=STORED_BITS,
        default=None,
        help="store the convolution and dense kernels at 16 bits (float16: half the size), 8 (int8 per output "
        "channel: a quarter) or 32, the figures measured on the rounded kernels (default: calibrate: as the "
        "version; ensemble: 32)",
    )
    add_probe_limit(parser)


def add_probe_limit(parser: argparse.ArgumentParser) -> None:
    """How many images of each other organ a release measures its out-of-distribution flags on."""
    parser.add_argument(
        "--probe-limit",
        type=positive,
        default=PROBE_LIMIT,
        help="images of each other disease's test part the out-of-distribution flags are measured on (default: "
        f"{PROBE_LIMIT}; fewer for a model of seconds per image)",
    )


def _switch(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help_text)


def _add_seeds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=42, help="the split and the folds (and the training, without --init-seed)"
    )
    parser.add_argument(
        "--init-seed",
        type=int,
        default=None,
        help="initial weights, shuffling and augmentation only: models of several init seeds share "
        "their test part and folds, to form a seed ensemble (`ensemble`, `ensemble-crossval`)",
    )


def add_training(parser: argparse.ArgumentParser) -> None:
    """The disease and the recipe's choices: what `train_options` turns into a run's options."""
    add_data(parser)
    parser.add_argument("--recipe", choices=("medscan", "paper"), default="medscan")
    parser.add_argument("--epochs", type=positive, default=None)
    parser.add_argument("--batch-size", type=positive, default=None)
    parser.add_argument("--learning-rate", type=fraction, default=None, help="Adam's initial rate (default: 0.001)")
    parser.add_argument("--image-size", type=positive, default=None, help="square input side in pixels")
    _add_seeds(parser)
    _switch(parser, "--augment", "augment the training images (default: the recipe's choice for the disease)")
    _switch(
        parser,
        "--dihedral",
        "train on each image in a random one of its 8 flips and quarter turns, for images with no "
        "orientation such as cells (square input; default: the recipe's choice)",
    )
    _switch(
        parser,
        "--stain-jitter",
        "vary each training image's hue, saturation and brightness, as stains and microscopes do "
        "(RGB input only; default: the recipe's choice)",
    )
    _switch(
        parser,
        "--intensity-jitter",
        "vary each training image's gain and gamma, as another scanner's settings would (default: the recipe's choice)",
    )
    _switch(
        parser,
        "--aspect-jitter",
        "zoom each training image's width apart from its height, as frames squashed to a square from another "
        "aspect would distort it (default: the recipe's choice)",
    )
    _switch(
        parser,
        "--frozen-backbone",
        "keep an ImageNet backbone (--arch, --weights) frozen and fit only a logistic-regression head on "
        "its pooled features (default: the recipe's choice)",
    )
    parser.add_argument(
        "--fine-tune-from",
        default=None,
        metavar="LAYER",
        help="train only the layers above this one (e.g. block10_add, the end of EfficientNet-Lite0's stage 5), "
        "on its outputs computed once per image and flip; with --frozen-backbone, after the head's regression",
    )
    parser.add_argument(
        "--kernel-bits",
        type=int,
        choices=STORED_BITS,
        default=None,
        help="train from kernels rounded as a version stored at 16 or 8 bits keeps them (all but the head), "
        "and store the version so: a frozen backbone's head then learns the features the export computes "
        "(default: the recipe's, 32)",
    )
    add_description(parser)
    add_network(parser)
    add_target_sensitivity(parser)


def add_description(parser: argparse.ArgumentParser) -> None:
    """What a disease without tuned defaults is, said on the command line (flags win over disease.json)."""
    parser.add_argument(
        "--colour-mode",
        choices=("grayscale", "rgb"),
        default=None,
        help="for a disease without tuned defaults (default: from <data>/<disease>/disease.json, "
        "else detected from the images)",
    )
    parser.add_argument(
        "--enhancement",
        choices=[mode.value for mode in Enhancement],
        default=None,
        help="a modality's standard preparation, in training and serving alike (fundus: crop to "
        "the disc, normalise colour; contrast: CLAHE, for X-rays and ultrasound; default: the "
        "disease's own)",
    )
    parser.add_argument("--description", default=None, help="what the model tells apart, for its card")
    parser.add_argument("--caveat", action="append", default=[], help="a caveat for the card (repeatable)")


def add_network(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="paper_cnn",
        help="the paper's CNN, or a Keras Applications network with a new two-unit head",
    )
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="tf.distribute: this process (default), every local device, or the workers of TF_CONFIG",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="per-epoch checkpoints (mirrored, multiworker); a restarted worker resumes from them",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="none (from scratch), imagenet (downloads Keras' weights), a local no-top weights file, "
        "or a backbone from `pretrain` (default: the recipe's start; breast_cancer: pretrained)",
    )
    parser.add_argument(
        "--backbones",
        type=Path,
        default=Path("backbones"),
        help="where a recipe's pretrained start is kept, made on first use (default: backbones/)",
    )


def verbosity() -> int:
    return 1 if sys.stderr.isatty() else 2  # Keras' progress bar on a terminal, a line per epoch in a log


def train_options(args: argparse.Namespace, disease: str | None = None):
    """The command line's edge: the disease described once (its record, disease.json, the flags) into the
    options every run is passed."""
    from training.data.config import DiseaseFlags
    from training.release.train import options_for

    flags = DiseaseFlags(
        image_size=args.image_size,
        colour_mode=args.colour_mode,
        enhancement=args.enhancement,
        description=args.description,
        caveats=tuple(args.caveat),
    )
    return options_for(
        disease or args.disease,
        args.data,
        args.out,
        flags,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        augment=args.augment,
        stain_jitter=args.stain_jitter,
        intensity_jitter=args.intensity_jitter,
        aspect_jitter=args.aspect_jitter,
        frozen_backbone=args.frozen_backbone,
        fine_tune_from=args.fine_tune_from,
        kernel_bits=args.kernel_bits,
        dihedral=args.dihedral,
        seed=args.seed,
        init_seed=args.init_seed,
        target_sensitivity=args.target_sensitivity,
        arch=args.arch,
        strategy=args.strategy,
        checkpoint_dir=args.checkpoint_dir,
        weights=args.weights,
        backbones_dir=args.backbones,
        verbose=verbosity(),
    )

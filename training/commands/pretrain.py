"""`pretrain`: the paper's CNN pretrained on every other data set, to start a small data set's training from."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.contract.preprocessing import Enhancement
from training.commands.arguments import Command, positive, verbosity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    parser.add_argument("--data", type=Path, required=True, help="folder holding <disease>/{infected,uninfected}/")
    parser.add_argument("--out", type=Path, default=Path("backbones"), help="default: backbones/")
    parser.add_argument("--epochs", type=positive, default=None, help="default: 10")
    parser.add_argument(
        "--per-disease",
        type=positive,
        default=None,
        help="at most this many images of each other data set, drawn at random (default: 5000)",
    )
    parser.add_argument("--image-size", type=positive, default=None, help="default: the disease's")
    parser.add_argument("--enhancement", choices=[mode.value for mode in Enhancement], default=None)
    parser.add_argument("--seed", type=int, default=42)


def run(args: argparse.Namespace) -> str:
    from training.data.config import DiseaseFlags, describe_disease
    from training.networks.pretrain import PretrainOptions, pretrain

    config = describe_disease(
        args.disease, args.data, DiseaseFlags(image_size=args.image_size, enhancement=args.enhancement)
    )
    said = {
        name: value for name, value in (("epochs", args.epochs), ("per_disease", args.per_disease)) if value is not None
    }  # the rest: PretrainOptions' defaults, the ones a recipe's start is made with
    options = PretrainOptions(
        target=args.disease,
        data_dir=args.data,
        spec=config.spec(),
        out_dir=args.out,
        seed=args.seed,
        verbose=verbosity(),
        **said,
    )
    return f"{args.disease}: pretrained {pretrain(options)}"


COMMAND = Command(
    "pretrain",
    "pretrain the paper's CNN on every other data set in --data, at this disease's input, "
    "to start its training from (--weights <backbone>.keras); this disease's own images are never read",
    add_arguments,
    run,
)

"""`feature-probe`: which frozen ImageNet features carry the disease, on cross-validate's grouped folds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands.arguments import Command, add_training, positive, train_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_training(parser)
    parser.add_argument("--folds", type=positive, default=5)
    parser.add_argument("--report", type=Path, default=None, help="write the result here as JSON")


def run(args: argparse.Namespace) -> str:
    from training.experiments.feature_probe import feature_probe

    if not args.weights:
        raise ValueError("feature-probe needs the frozen backbone's --weights (and --arch)")
    return json.dumps(feature_probe(train_options(args), args.weights, args.folds, args.report), indent=2)


COMMAND = Command(
    "feature-probe",
    "which frozen ImageNet features (pooled how, from which stages) carry the disease: each candidate "
    "fitted with a logistic regression on cross-validate's grouped folds, features computed once",
    add_arguments,
    run,
)

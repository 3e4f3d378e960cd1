"""`cross-validate`: stratified, grouped k-fold cross-validation of a recipe on everything but the test part."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_report_dir, add_training, positive, train_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_training(parser)
    parser.add_argument("--folds", type=positive, default=5)
    add_report_dir(parser, "reports/crossval", "where the JSON result is written (default: reports/crossval/)")


def run(args: argparse.Namespace) -> str:
    from training.experiments.crossval import cross_validate

    result = cross_validate(train_options(args), folds=args.folds, report_dir=args.report_dir)
    shown = ("disease", "folds", "input", "images", "groups", "summary", "screening")
    return json.dumps({key: result[key] for key in shown}, indent=2)


COMMAND = Command(
    "cross-validate",
    "stratified, grouped k-fold cross-validation of a recipe on everything but the test part",
    add_arguments,
    run,
)

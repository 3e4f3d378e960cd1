"""`confound`: how well global colour and border statistics, blind to lesions, separate the classes."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_report_dir, add_training, train_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_training(parser)
    add_report_dir(parser, "reports", "adds an entry to <report-dir>/<disease>/confound.json (default: reports/)")


def run(args: argparse.Namespace) -> str:
    from training.experiments.confound import confound_check

    return json.dumps(confound_check(train_options(args), report_dir=args.report_dir), indent=2)


COMMAND = Command(
    "confound",
    "how well a linear model on global colour and border statistics (blind to lesions) "
    "separates the classes, on the pixels the model is fed",
    add_arguments,
    run,
)

"""`evaluate`: an exported version measured on its test part as served."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_version(parser)
    parser.add_argument("--write", action="store_true", help="replace the figures in the version's card and report")


def run(args: argparse.Namespace) -> str:
    from training.evaluation.run import evaluate_version

    card = evaluate_version(
        args.disease, data_dir=args.data, models_dir=args.out, version=args.version, write=args.write
    )
    shown = {"disease", "version", "metrics", "calibration", "screening", "out_of_distribution"}
    return json.dumps(card.model_dump(include=shown), indent=2)


COMMAND = Command(
    "evaluate",
    "measure an exported version on its test part as served: metrics with group-bootstrap "
    "intervals, calibration, screening threshold, out-of-distribution flags",
    add_arguments,
    run,
)

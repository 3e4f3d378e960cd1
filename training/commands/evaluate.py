"""`evaluate`: an exported version measured on its test part as served."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_probe_limit, add_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_version(parser)
    add_probe_limit(parser)
    parser.add_argument("--write", action="store_true", help="replace the figures in the version's card and report")


def run(args: argparse.Namespace) -> str:
    from training.evaluation.run import evaluate_version

    card = evaluate_version(
        args.disease,
        data_dir=args.data,
        models_dir=args.out,
        version=args.version,
        write=args.write,
        probe_limit=args.probe_limit,
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

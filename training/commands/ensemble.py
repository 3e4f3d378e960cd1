"""`ensemble`: several versions of a disease published as one that answers their mean."""

from __future__ import annotations

import argparse

from training.commands.arguments import Command, add_data, add_export_choices, export_choices, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_data(parser)
    parser.add_argument("--members", type=positive, nargs="+", required=True, help="the versions to combine")
    add_export_choices(parser, "the flips every member answers with")


def run(args: argparse.Namespace) -> str:
    from training.experiments.ensemble import ensemble_versions

    target = ensemble_versions(
        args.disease,
        args.members,
        data_dir=args.data,
        models_dir=args.out,
        **export_choices(args),
    )
    return f"{args.disease}: exported {target}"


COMMAND = Command(
    "ensemble",
    "publish several versions of a disease (same split, same kind of input; smaller ones resized in the graph) "
    "as one new version that answers the mean of their P(infected), with its own calibration, thresholds and "
    "test figures",
    add_arguments,
    run,
)

"""`ensemble-crossval`: the cross-validation of an ensemble of recipes, from their reports' kept scores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands.arguments import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", type=Path, nargs="+")


def run(args: argparse.Namespace) -> str:
    from training.experiments.ensemble import combine_crossvalidations

    result, written = combine_crossvalidations(args.reports, args.reports[0].parent)
    shown = {"report": str(written), "at_0_5": result["summary"], "at_screening": result["screening"]}
    return json.dumps(shown, indent=2)


COMMAND = Command(
    "ensemble-crossval",
    "the cross-validation of an ensemble of recipes, from their reports' kept scores "
    "on the same folds (no training); written beside them",
    add_arguments,
    run,
)

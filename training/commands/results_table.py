"""`results-table`: the results tables, made from the shipped cards; with --write, into the README and docs."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.arguments import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", type=Path, nargs="?", default=Path("models"), help="default: models/")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--write", action="store_true", help="rewrite the generated blocks of README.md and docs/")
    shown.add_argument("--glance", action="store_true", help="only the short table of the README's top")


def run(args: argparse.Namespace) -> str:
    from training.evaluation import results_table

    if args.write:
        return "\n".join(str(path) for path in results_table.write_generated(args.models)) or "unchanged"
    if args.glance:
        return results_table.glance_table(args.models)
    tables = (results_table.table, results_table.crossval_table, results_table.sites_table, results_table.trust_table)
    return "\n\n".join(make(args.models) for make in tables)


COMMAND = Command(
    "results-table",
    "the results tables made from the cards (test part, cross-validation, sites, trust layer); "
    "--write puts them into README.md and docs/models.md",
    add_arguments,
    run,
)

"""`ensemble-cross-site`: the leave-one-site-out figures of an ensemble, from its members' cross-site reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands.arguments import Command, add_data, add_report_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", type=Path, nargs="+")
    add_data(parser)
    add_report_dir(parser, "reports/cross_site", "where the ensemble's report is written (default: reports/cross_site)")


def run(args: argparse.Namespace) -> str:
    from training.experiments.ensemble_cross_site import combine_cross_sites

    result, written = combine_cross_sites(args.reports, args.data, args.report_dir)
    shown = {"report": str(written), "held_out": {r["site"]: r["figures"]["roc_auc"] for r in result["held_out"]}}
    return json.dumps(shown, indent=2)


COMMAND = Command(
    "ensemble-cross-site",
    "the leave-one-site-out figures of an ensemble, from its members' cross-site reports' kept answers (no training)",
    add_arguments,
    run,
)

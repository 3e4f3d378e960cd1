"""`cross-site`: leave one site out, for each site the disease names."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_report_dir, add_training, train_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_training(parser)
    parser.add_argument("--sites", nargs="+", default=None, help="hold out only these sites (default: each)")
    add_report_dir(parser, "reports/cross_site", "where the JSON result is written (default: reports/cross_site/)")


def run(args: argparse.Namespace) -> str:
    from training.experiments.cross_site import cross_site

    result = cross_site(train_options(args), report_dir=args.report_dir, only=args.sites)
    held_out = {r["site"]: r["figures"] for r in result["held_out"]}
    return json.dumps({"report": result.get("report"), "sites": result["sites"], "held_out": held_out}, indent=2)


COMMAND = Command(
    "cross-site",
    "leave one site out: train the recipe on every other site (hospital, collection) and "
    "measure on the held-out one, for each site the disease names",
    add_arguments,
    run,
)

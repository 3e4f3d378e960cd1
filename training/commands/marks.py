"""`marks`: how much a version's answers change when burned-in calipers and text are painted out."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_report_dir, add_version, version_choices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_version(parser)
    add_report_dir(parser, "reports", "writes <report-dir>/<disease>/marks.json (default: reports/)")
    parser.add_argument("--write", action="store_true", help="put the result into the version's card")


def run(args: argparse.Namespace) -> str:
    from training.experiments.marks import marks_check

    result = marks_check(args.disease, **version_choices(args), report_dir=args.report_dir, write=args.write)
    return json.dumps(result, indent=2)


COMMAND = Command(
    "marks",
    "how much a version's answers on its test part change when burned-in calipers and text "
    "are painted out (a shortcut check for ultrasound)",
    add_arguments,
    run,
)

"""`record-crossval`, `record-cross-site`, `record-confound`: a measured result put into a version's card. One
module for the three: each reads a report, writes one field of the card, and shows it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from app.contract.model_card import ModelCard
from training.commands.arguments import Command, add_version

Recorder = Callable[[Path, str, Path, int | None], ModelCard]  # (models, disease, report, version) -> the card


def _recorder(name: str) -> Recorder:
    """Imported when run, so that --help does not wait for TensorFlow."""
    if name == "crossval":
        from training.experiments.card_crossval import record_in_card

        return record_in_card
    if name == "cross_site":
        from training.evaluation.generalisation import record_cross_site

        return record_cross_site
    from training.experiments.confound import record_confound_in_card

    return record_confound_in_card


def _command(name: str, field: str, from_folder: bool, help_text: str) -> Command:
    """`from_folder`: the report is found in --report-dir (by disease), else named on the command line."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_version(parser, data=False)
        if from_folder:
            parser.add_argument("--report-dir", type=Path, default=Path("reports"), help="default: reports/")
        else:
            parser.add_argument("report", type=Path)

    def run(args: argparse.Namespace) -> str:
        report = args.report_dir if from_folder else args.report
        card = _recorder(name)(args.out, args.disease, report, args.version)
        return json.dumps(card.model_dump(include={"disease", "version", field}), indent=2)

    return Command(f"record-{name.replace('_', '-')}", help_text, add_arguments, run)


CROSSVAL = _command(
    "crossval",
    "cross_validation",
    False,
    "put a cross-validation result (reports/crossval/*.json) into a version's card, "
    "with where its recipe differs from the version's",
)
CROSS_SITE = _command(
    "cross_site",
    "generalisation",
    False,
    "put a cross-site result (reports/cross_site/*.json) into a version's card",
)
CONFOUND = _command(
    "confound",
    "source_confound",
    True,
    "put the confound check of the pixels a version is fed (from <report-dir>/<disease>/confound.json) into its card",
)

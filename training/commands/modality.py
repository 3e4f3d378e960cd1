"""`modality`: fit, measure and export the service's modality check (which kind of image is this)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands.arguments import Command, add_data, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    parser.add_argument("--per-kind", type=positive, default=1200, help="images of each kind to fit on")
    parser.add_argument("--report", type=Path, default=Path("reports/modality.json"))
    parser.add_argument("--no-export", action="store_true", help="measure only")


def run(args: argparse.Namespace) -> str:
    from training.modality.check import ModalityOptions
    from training.modality.check import run as fit_check

    options = ModalityOptions(
        data_dir=args.data, models_dir=args.out, report=args.report, per_kind=args.per_kind, export=not args.no_export
    )
    return json.dumps(fit_check(options), indent=2)


COMMAND = Command(
    "modality",
    "fit, measure and export the service's modality check (which kind of image is this) on every data "
    "set in --data, synthetic images and photographs: models/_modality/<version>/",
    add_arguments,
    run,
)

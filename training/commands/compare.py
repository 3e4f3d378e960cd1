"""`compare`: the paper's comparison, several architectures on the same grouped folds."""

from __future__ import annotations

import argparse
import json

from training.commands.arguments import Command, add_report_dir, add_training, positive, train_options
from training.networks.architectures import ARCHITECTURES, FUNDUS_LESIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease")
    add_training(parser)
    learnt = [arch for arch in ARCHITECTURES if arch != FUNDUS_LESIONS]  # the lesion measures need a frozen head
    parser.add_argument("--archs", nargs="+", default=learnt, choices=ARCHITECTURES)
    parser.add_argument("--folds", type=positive, default=3)
    parser.add_argument(
        "--subset",
        type=positive,
        default=None,
        help="about this many images of the non-test part, whole patient groups (compute budget)",
    )
    parser.add_argument(
        "--per-group",
        type=positive,
        default=None,
        help="at most this many images of each patient group, drawn within it, before --subset "
        "(spreads a small budget over many patients, e.g. malaria's ~140 cells a patient)",
    )
    add_report_dir(parser, "reports", "the report goes to <report-dir>/<disease>/ (default: reports/)")


def run(args: argparse.Namespace) -> str:
    from training.experiments.compare import compare

    result = compare(
        train_options(args),
        args.archs,
        folds=args.folds,
        subset=args.subset,
        image_size=args.image_size,
        report_dir=args.report_dir,
        per_group=args.per_group,
    )
    return json.dumps({arch: r["summary"] for arch, r in result["architectures"].items()}, indent=2)


COMMAND = Command(
    "compare",
    "the paper's comparison: several architectures on the same grouped folds, with a report",
    add_arguments,
    run,
)

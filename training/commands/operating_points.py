"""`operating-points`: a cross-validation's served figures at each target sensitivity, from its kept scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.arguments import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", type=Path)


def run(args: argparse.Namespace) -> str:
    from training.experiments.crossval import operating_points

    lines = ["target  flips                  accuracy          sensitivity       specificity       AUC"]
    for row in operating_points(args.report):
        figures = "  ".join(
            f"{row[name]['mean']:.4f} +- {row[name]['std']:.4f}"
            for name in ("accuracy", "sensitivity", "specificity", "roc_auc")
        )
        lines.append(f"{row['target_sensitivity']:.2f}    {', '.join(row['test_time_flips']) or 'none':<22} {figures}")
    return "\n".join(lines)


COMMAND = Command(
    "operating-points",
    "a cross-validation's served accuracy, sensitivity and specificity at each target "
    "sensitivity, with and without test-time flips, from its kept scores (no training)",
    add_arguments,
    run,
)

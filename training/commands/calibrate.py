"""`calibrate`: re-export a version as a new one with its trust layer fitted on its own split."""

from __future__ import annotations

import argparse

from training.commands.arguments import Command, add_export_choices, add_version, export_choices, version_choices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_version(parser)
    add_export_choices(parser, "as the version does")


def run(args: argparse.Namespace) -> str:
    from training.release.calibrate import calibrate_version

    target = calibrate_version(args.disease, **version_choices(args), **export_choices(args))
    return f"{args.disease}: exported {target}"


COMMAND = Command(
    "calibrate",
    "re-export an existing version as a new one with calibration, screening threshold, "
    "out-of-distribution statistics and Grad-CAM fitted on its own split (answers unchanged, unless "
    "--test-time-flips changes them)",
    add_arguments,
    run,
)

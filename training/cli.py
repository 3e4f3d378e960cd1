"""`python -m training <command>`: train, measure and publish MedScan's models. The commands live in
training/commands/, one module each."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from app.contract.memory import keep_freed_memory
from training.commands import COMMANDS

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(commands.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # halves training time on our VMs; see app/contract/memory.py
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # Imported after parsing so that --help and argument errors do not wait for TensorFlow.
    from app.contract.savedmodel import ModelLoadError
    from training.data.samples import DataError

    run = {command.name: command.run for command in COMMANDS}[args.command]
    try:
        # Progress (Keras prints it) goes to stderr; stdout carries only the answer, e.g. JSON to pipe on.
        with contextlib.redirect_stdout(sys.stderr):
            answer = run(args)
    except (DataError, ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(answer)
    return 0

"""`train-all`: retrain every disease that the data folder holds."""

from __future__ import annotations

import argparse

from training.commands.arguments import Command, add_probe_limit, add_training
from training.commands.train import train_one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training(parser)
    add_probe_limit(parser)


def run(args: argparse.Namespace) -> str:
    from training.data.samples import diseases_in

    return "\n".join(train_one(args, disease) for disease in diseases_in(args.data))


COMMAND = Command("train-all", "retrain every disease that the data folder holds", add_arguments, run)

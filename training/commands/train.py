"""`train`: train, evaluate and export one disease model."""

from __future__ import annotations

import argparse
from dataclasses import replace

from training.commands.arguments import Command, add_probe_limit, add_training, train_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("disease", help="a built-in disease (training/diseases/), or any other name: see --colour-mode")
    add_training(parser)
    add_probe_limit(parser)


def train_one(args: argparse.Namespace, disease: str | None = None) -> str:
    from training.release.train import train

    options = replace(train_options(args, disease), probe_limit=args.probe_limit)
    target = train(options)
    return (
        f"{options.disease}: exported {target}"
        if target
        else f"{options.disease}: trained as a worker; the chief exports"
    )


COMMAND = Command("train", "train, evaluate and export one disease model", add_arguments, train_one)

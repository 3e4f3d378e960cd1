"""`python -m training train|evaluate|train-all ...`"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.memory import keep_freed_memory
from training.config import DISEASES

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate and export one disease model")
    train.add_argument("disease", help=f"one of: {', '.join(DISEASES)}")
    _add_common(train)
    _add_training(train)

    train_all = commands.add_parser("train-all", help="retrain every disease that the data folder holds")
    _add_common(train_all)
    _add_training(train_all)

    evaluate = commands.add_parser("evaluate", help="evaluate an exported version on its test part")
    evaluate.add_argument("disease", help=f"one of: {', '.join(DISEASES)}")
    _add_common(evaluate)
    evaluate.add_argument("--version", type=int, default=None, help="model version (default: the latest)")
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder holding <disease>/{infected,uninfected}/")
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models/)")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", choices=("medscan", "paper"), default="medscan")
    parser.add_argument("--epochs", type=_positive, default=None)
    parser.add_argument("--batch-size", type=_positive, default=None)
    parser.add_argument("--image-size", type=_positive, default=None, help="square input side in pixels")
    parser.add_argument("--seed", type=int, default=42)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # halves training time on our VMs; see app/memory.py
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # Imported after parsing so that --help and argument errors do not wait for TensorFlow.
    from app.savedmodel import ModelLoadError
    from training.data import DataError

    try:
        if args.command == "evaluate":
            return _evaluate(args)
        diseases = [args.disease] if args.command == "train" else _diseases_in(args.data)
        for disease in diseases:
            _train(args, disease)
        return 0
    except (DataError, ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _diseases_in(data_dir: Path) -> list[str]:
    from training.data import DataError

    found = [name for name in DISEASES if (data_dir / name).is_dir()]
    if not found:
        raise DataError(f"{data_dir} holds none of: {', '.join(DISEASES)}")
    return found


def _train(args: argparse.Namespace, disease: str) -> None:
    from training.train import TrainOptions, train

    target = train(TrainOptions(
        disease=disease, data_dir=args.data, models_dir=args.out, recipe=args.recipe, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
        verbose=1 if sys.stderr.isatty() else 2,
    ))
    print(f"{disease}: exported {target}")


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluation_run import evaluate_version

    metrics = evaluate_version(args.disease, data_dir=args.data, models_dir=args.out, version=args.version)
    print(json.dumps(metrics.model_dump(), indent=2))
    return 0

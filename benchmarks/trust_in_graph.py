"""What the trust layer costs inside the model's graph, and what each of its features costs.

    python -m benchmarks.trust_in_graph --models models --diseases pneumonia malaria

The service calls the `analyse` signature: the network plus the out-of-distribution features (the spatial
mean of every convolution, the head's input, the input's statistics: intensity and gradient histograms and a
4 x 4 layout) and their Mahalanobis distance.
This times, per image at a batch of 1 and of 32, interleaved so that a busy machine slows them alike:

- the exported `serving_default` (the bare network) and `analyse`, as the service loads them;
- the network rebuilt from the version's weights, and the `analyse` arithmetic rebuilt from the same code
  that exports it (`training/networks/servable.py`), whole and with one feature group left out at a time.

The gap between a variant and the whole rebuilt `analyse` is the most that leaving that feature out could
save. Needs the training extras (Keras). Writes benchmarks/results/trust-in-graph.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.contract.model_card import read_card
from app.contract.model_store import METADATA_FILE, latest_version_dir
from app.contract.savedmodel import load_model
from app.runtime import tf_runtime
from app.settings import Settings
from training.networks import servable
from training.networks.architectures import make_architecture

RESULTS = Path(__file__).parent / "results"
Call = Callable[[tf.Tensor], object]


def features_graph(model: keras.Model, pooled: list[str], statistics: tuple[str, ...], flips: tuple[str, ...]) -> Call:
    """The rebuilt `analyse` with only the named convolutions pooled and the named input statistics
    (servable.INPUT_STATISTICS); the Mahalanobis distance over whatever features remain (statistics of the
    right size: its cost does not depend on them)."""
    parts = [
        keras.layers.GlobalAveragePooling2D()(layer.output)
        for layer in servable.conv_layers(model)
        if layer.name in pooled
    ]
    penultimate = servable.head(model).input
    parts.append(penultimate)
    parts += [servable.INPUT_STATISTICS[name]()(model.inputs[0]) for name in statistics]
    features = keras.layers.Concatenate()(parts) if len(parts) > 1 else parts[0]
    analysis = keras.Model(model.inputs, {"features": features, "penultimate": penultimate})
    size = int(features.shape[-1])
    rng = np.random.default_rng(0)
    distance = servable.MahalanobisDistance(
        servable.OodStatistics(
            center=np.zeros(size, np.float32),
            scale=np.ones(size, np.float32),
            whitening=rng.normal(size=(size, size)).astype(np.float32),
            class_means=rng.normal(size=(2, size)).astype(np.float32),
        )
    )

    views = 1 + len(servable.flip_views(flips)) if flips else 1

    def analyse(image):
        # as servable.analysed does it: every view in one batch, features of the image as sent
        outputs = analysis(servable.with_flips(image, flips) if flips else image, training=False)
        log_odds = servable.log_odds_from_logits(servable.logits_of(model, outputs["penultimate"]))
        if views > 1:
            log_odds = servable.mean_over_views(log_odds, views)
        return {
            "scores": tf.sigmoid(log_odds),
            "log_odds": log_odds,
            "ood_distance": distance(outputs["features"][: tf.shape(image)[0]]),
        }

    return tf.function(analyse, input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])


def variants(folder: Path) -> dict[str, Call]:
    loaded = load_model(folder)
    spec = loaded.card.input.spec()
    if loaded.card.ensemble_of:
        raise ValueError(f"{folder}: an ensemble; this rebuilds a single network's graph")
    flips = tuple(loaded.card.test_time_flips)
    model = servable.rebuild_keras_model(folder, make_architecture(loaded.card.training.architecture, spec))
    convs = [layer.name for layer in servable.conv_layers(model)]
    network = tf.function(
        lambda image: model(servable.with_flips(image, flips) if flips else image, training=False),
        input_signature=[tf.TensorSpec((None, *spec.shape), tf.float32)],
    )
    every = tuple(servable.INPUT_STATISTICS)
    histogram = ("ood_histogram",)  # the one input statistic of versions exported before 2026-11-30
    return {
        "exported serving_default (bare network)": loaded.predict,
        "exported analyse (what the service calls)": loaded.analyse,
        "rebuilt network": network,
        "rebuilt analyse, every feature": features_graph(model, convs, every, flips),
        "  without the gradient histogram and layout": features_graph(model, convs, histogram, flips),
        "  without any input statistic": features_graph(model, convs, (), flips),
        "  without the first convolution's mean": features_graph(model, convs[1:], every, flips),
        "  without any convolution's mean": features_graph(model, [], every, flips),
        "  the head's input alone": features_graph(model, [], (), flips),
    }


def measure(disease: str, models_dir: Path, batch_sizes: list[int], rounds: int, calls: int) -> dict:
    folder = latest_version_dir(models_dir, disease)
    calls_by_name = variants(folder)
    spec = read_card(folder / METADATA_FILE).input.spec()  # the card alone: variants() has loaded the model
    rng = np.random.default_rng(0)
    result: dict = {"disease": disease, "version": folder.name, "input": list(spec.shape), "per_image_us": {}}
    for size in batch_sizes:
        batch = rng.random((size, *spec.shape), dtype=np.float32)
        tensor = tf.constant(batch)
        times: dict[str, list[float]] = {name: [] for name in calls_by_name}
        for round_index in range(rounds + 1):  # interleaved: a busy spell slows every variant alike
            for index, (name, call) in enumerate(calls_by_name.items()):
                argument = batch if index < 2 else tensor  # the exported ones take numpy, as the service passes it
                if round_index == 0:  # the first round only warms every graph
                    call(argument)
                    continue
                started = time.perf_counter()
                for _ in range(calls):
                    call(argument)
                times[name].append((time.perf_counter() - started) / calls / size * 1e6)
        result["per_image_us"][str(size)] = {name: round(statistics.median(t), 1) for name, t in times.items()}
    return result


def markdown(results: list[dict]) -> str:
    lines = []
    for result in results:
        sizes = list(result["per_image_us"])
        lines += [
            f"### {result['disease']} v{result['version']} ({'x'.join(map(str, result['input']))})",
            "",
            "| graph | " + " | ".join(f"batch {s}: us/image | vs rebuilt analyse" for s in sizes) + " |",
            "|---|" + "---|---|" * len(sizes),
        ]
        for name in result["per_image_us"][sizes[0]]:
            cells = []
            for size in sizes:
                row = result["per_image_us"][size]
                whole = row["rebuilt analyse, every feature"]
                cells += [f"{row[name]:.1f}", f"{(row[name] / whole - 1) * 100:+.1f}%"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--diseases", nargs="+", default=["pneumonia", "malaria"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--name", default="trust-in-graph")
    args = parser.parse_args()
    # The service's thread choice for these models, so the figures are those of a served request.
    settings = Settings()
    tf_runtime.configure(settings.tf_intra_op_threads, settings.tf_inter_op_threads, args.models)
    results = [measure(d, args.models, args.batch_sizes, args.rounds, args.calls) for d in args.diseases]
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

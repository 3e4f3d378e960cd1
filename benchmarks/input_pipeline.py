"""Training throughput of the tf.data pipeline against the same images held in memory as arrays.

    python -m benchmarks.input_pipeline --data ../shared/datasets --disease malaria

Both fit the same paper CNN with the same batch size and sample weights; the first epoch of each
is a warm-up (for the pipeline it also fills nothing: the cache is filled before timing starts).
Target: the pipeline trains at >= 90% of the in-memory rate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.contract.machine import describe_machine
from app.contract.memory import keep_freed_memory
from training.data.config import get_disease
from training.data.pipeline import decode_samples, scale_batch, training_batches
from training.data.samples import find_samples, split_by_group
from training.networks.model import compile_model, make_model


def time_epochs(fit_one_epoch, epochs: int, images: int) -> float:
    fit_one_epoch()  # warm-up: tracing, allocation
    started = time.perf_counter()
    for _ in range(epochs):
        fit_one_epoch()
    return epochs * images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--disease", default="malaria")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two a few times")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    keep_freed_memory()  # as training does (app/contract/memory.py)

    config = get_disease(args.disease)
    spec = config.spec()
    train = split_by_group(find_samples(args.data, args.disease)).train
    samples = train[:: max(1, len(train) // args.images)][: args.images]
    decoded = decode_samples(samples, spec)
    n = decoded.size

    pipeline = training_batches(decoded, batch_size=args.batch_size, seed=1)
    pixels = np.stack([p for p, _ in decoded.dataset.as_numpy_iterator()])
    x = scale_batch(tf.constant(pixels)).numpy()
    y = keras.utils.to_categorical(decoded.labels, 2).astype(np.float32)
    w = np.ones(n, np.float32)

    keras.utils.set_random_seed(1)
    model = make_model(spec)
    compile_model(model, learning_rate=1e-3)
    rates: dict[str, list[float]] = {"tf_data": [], "in_memory": []}
    for _ in range(args.rounds):
        rates["in_memory"].append(
            time_epochs(
                lambda: model.fit(x, y, sample_weight=w, batch_size=args.batch_size, shuffle=True, epochs=1, verbose=0),
                args.epochs,
                n,
            )
        )
        rates["tf_data"].append(
            time_epochs(lambda: model.fit(pipeline, epochs=1, verbose=0, shuffle=False), args.epochs, n)
        )
    result = {
        "disease": args.disease,
        "input": list(spec.shape),
        "images": n,
        "batch_size": args.batch_size,
        "epochs_timed_per_round": args.epochs,
        "rounds": args.rounds,
        "images_per_second": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "median_images_per_second": {k: round(float(np.median(vs)), 1) for k, vs in rates.items()},
        "ratio_tf_data_to_in_memory": round(float(np.median(rates["tf_data"]) / np.median(rates["in_memory"])), 3),
        "machine": describe_machine(),
        "tensorflow": tf.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"input_pipeline-{args.disease}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

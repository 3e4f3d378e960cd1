"""Raw model throughput R and single-call latency, on already-preprocessed arrays, in one process.

    python -m benchmarks.raw_model --models models --diseases malaria pneumonia

R is the ceiling for a model on this machine: the best images/s over a few batch sizes, calling the
SavedModel's serving signature exactly as the service does, with TensorFlow on every core whatever
MEDSCAN_TF_INTRA_OP_THREADS says, so that R is a true ceiling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from app.contract.machine import describe_machine
from app.contract.model_store import latest_version_dir
from app.contract.savedmodel import load_model
from app.runtime import tf_runtime
from app.settings import Settings


def measure(
    disease: str, models_dir: Path, batch_sizes: list[int], seconds: float, signature: str = "analyse", calls: int = 300
) -> dict:
    """`analyse` is what the service calls (scores, log-odds, out-of-distribution distance);
    `serving_default` is the bare network, as TF Serving would run it."""
    loaded = load_model(latest_version_dir(models_dir, disease))
    call = loaded.analyse if signature == "analyse" else loaded.predict
    shape = loaded.card.input.spec().shape
    rng = np.random.default_rng(0)
    one = rng.random((1, *shape), dtype=np.float32)
    for _ in range(min(20, calls)):
        call(one)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        call(one)
        latencies.append((time.perf_counter() - started) * 1000)
    # A request that arrives after a quiet spell finds cold caches and sleeping threads: measured too,
    # since that, not the back-to-back figure, is what a lone client sees.
    after_idle = []
    for _ in range(max(1, calls // 3)):
        time.sleep(0.01)
        started = time.perf_counter()
        call(one)
        after_idle.append((time.perf_counter() - started) * 1000)
    throughput = {}
    for size in batch_sizes:
        batch = rng.random((size, *shape), dtype=np.float32)
        call(batch)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            call(batch)
            calls += 1
        throughput[size] = round(calls * size / (time.perf_counter() - started), 1)
    best = max(throughput, key=lambda size: throughput[size])
    return {
        "disease": disease,
        "version": loaded.card.version,
        "machine": describe_machine(),
        "signature": signature,
        "input": list(shape),
        "single_call_ms": {
            "p50": round(statistics.median(latencies), 3),
            "p99": round(float(np.percentile(latencies, 99)), 3),
        },
        "single_call_after_10ms_idle_ms": {"p50": round(statistics.median(after_idle), 3)},
        "images_per_second_by_batch": throughput,
        "R_images_per_second": throughput[best],
        "R_batch_size": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--diseases", nargs="+", default=["malaria", "pneumonia"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=300, help="single-image calls timed (a third as many after idle)")
    parser.add_argument(
        "--signatures", nargs="+", default=["analyse", "serving_default"], choices=["analyse", "serving_default"]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/raw_model.json"))
    args = parser.parse_args()
    # every core to TensorFlow, whatever the service would choose: R is the model's ceiling
    tf_runtime.configure(tf_runtime.available_cores(), Settings().tf_inter_op_threads, args.models)
    results = [
        measure(d, args.models, args.batch_sizes, args.seconds, signature, args.calls)
        for d in args.diseases
        for signature in args.signatures
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

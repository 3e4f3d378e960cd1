"""Endurance run: many mixed requests at high concurrency against `medscan serve` on loopback.

    .venv/bin/python -m benchmarks.endurance [--requests 20000] [--concurrency 64]

Starts the service on the shipped models (or --models), then sends a bounded number of requests
(bounded in time too: --max-seconds) mixing valid and invalid images, several models and every
protocol (/predict, TF Serving REST, KServe V2 JSON and binary). Checks: no 5xx; every valid answer
equals the service's own sequential answer for the same image (score within 1e-5); resident memory
after the run within 10% of after warm-up. Images are synthetic. Results: benchmarks/results/endurance.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.live_service import running_service, write_result

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5
MODELS = ("malaria", "pneumonia", "brain_tumor")


@dataclass(frozen=True)
class Case:
    model: str
    protocol: str  # predict, tf_serving, v2_json, v2_binary
    image: int  # index into the images; -1: an invalid one
    invalid: bytes = b""


def synthetic_images(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        size = int(rng.integers(40, 300))
        pixels = rng.normal(rng.uniform(60, 190), rng.uniform(5, 40), (size, size, 3)).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG" if index % 2 else "JPEG")
        images.append(buffer.getvalue())
    return images


INVALID = (b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"")


def request_for(case: Case, data: bytes) -> tuple[str, str, dict[str, Any]]:
    """(method, path, httpx keyword arguments) for one case."""
    if case.protocol == "predict":
        return "POST", f"/predict/{case.model}", {"files": {"file": ("image", data, "application/octet-stream")}}
    if case.protocol == "tf_serving":
        instance = {"b64": base64.b64encode(data).decode("ascii")}
        return "POST", f"/v1/models/{case.model}:predict", {"json": {"instances": [instance]}}
    if case.protocol == "v2_json":
        tensor = {"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}
        return "POST", f"/v2/models/{case.model}/infer", {"json": {"inputs": [tensor], "outputs": [{"name": "score"}]}}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(data)},
                }
            ],
            "outputs": [{"name": "score"}],
        }
    ).encode()
    return (
        "POST",
        f"/v2/models/{case.model}/infer",
        {
            "content": header + struct.pack("<I", len(data)) + data,
            "headers": {
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        },
    )


def score_of(case: Case, response: httpx.Response) -> float:
    body = response.json()
    if case.protocol == "predict":
        return body["score"]
    if case.protocol == "tf_serving":
        return body["predictions"][0][0]
    return body["outputs"][0]["data"][0]


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def reference_answers(client: httpx.AsyncClient, images: list[bytes]) -> dict[tuple[str, int], float]:
    """Sequential answers to compare the concurrent ones with; they also warm every model and path."""
    reference: dict[tuple[str, int], float] = {}
    for model in MODELS:
        for index, data in enumerate(images):
            response = await client.post(f"/predict/{model}", files={"file": ("image", data, "image/png")})
            response.raise_for_status()
            reference[(model, index)] = response.json()["score"]
    return reference


def random_cases(requests: int, invalid_share: float, images: int) -> list[Case]:
    rng = random.Random(1)
    protocols = ("predict", "tf_serving", "v2_json", "v2_binary")
    return [
        Case(rng.choice(MODELS), rng.choice(protocols), -1, rng.choice(INVALID))
        if rng.random() < invalid_share
        else Case(rng.choice(MODELS), rng.choice(protocols), rng.randrange(images))
        for _ in range(requests)
    ]


async def run(args: argparse.Namespace, base_url: str, pid: int) -> dict[str, Any]:
    images = synthetic_images(args.images)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=args.concurrency)
    ) as client:
        reference = await reference_answers(client, images)
        rss_warm = resident_mib(pid)
        cases = random_cases(args.requests, args.invalid, len(images))
        statuses: Counter[str] = Counter()
        mismatches: list[dict[str, Any]] = []
        transport_errors: list[dict[str, Any]] = []
        latencies: list[float] = []
        queue: asyncio.Queue[Case] = asyncio.Queue()
        for case in cases:
            queue.put_nowait(case)
        deadline = time.monotonic() + args.max_seconds

        async def worker() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                case = queue.get_nowait()
                data = case.invalid if case.image < 0 else images[case.image]
                method, path, options = request_for(case, data)
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, **options)
                except httpx.TransportError as error:
                    statuses[f"transport:{type(error).__name__}"] += 1
                    transport_errors.append(
                        {"case": case.__dict__ | {"invalid": repr(case.invalid[:12])}, "error": repr(error)}
                    )
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[str(response.status_code)] += 1
                if case.image >= 0 and response.status_code == 200:
                    got, expected = score_of(case, response), reference[(case.model, case.image)]
                    if abs(got - expected) > TOLERANCE:
                        mismatches.append({"case": case.__dict__ | {"invalid": ""}, "got": got, "expected": expected})

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        seconds = time.perf_counter() - started
    return summary(args, statuses, latencies, mismatches, transport_errors, seconds, rss_warm, resident_mib(pid))


def summary(
    args: argparse.Namespace,
    statuses: Counter[str],
    latencies: list[float],
    mismatches: list[dict[str, Any]],
    transport_errors: list[dict[str, Any]],
    seconds: float,
    rss_warm: float,
    rss_after: float,
) -> dict[str, Any]:
    sent = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5") or status.startswith("transport"))
    percentiles = (("p50", 50), ("p99", 99), ("max", 100))
    return {
        "requests": sent,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 1),
        "requests_per_second": round(sent / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": server_errors,
        "transport_error_examples": transport_errors[:5],
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        "latency_ms": {q: round(float(np.percentile(latencies, p)) * 1000, 1) for q, p in percentiles}
        if latencies
        else {},
        "rss_mib_after_warm_up": round(rss_warm, 1),
        "rss_mib_after_run": round(rss_after, 1),
        "rss_change": round(rss_after / rss_warm - 1, 4),
        "passed": server_errors == 0 and not mismatches and rss_after <= 1.10 * rss_warm and sent == args.requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--images", type=int, default=24, help="distinct synthetic images")
    parser.add_argument("--invalid", type=float, default=0.1, help="share of invalid images")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "endurance.json")
    args = parser.parse_args()
    env = {
        "MEDSCAN_MODELS_DIR": str(args.models),
        "MEDSCAN_LOG_LEVEL": "warning",
        "MEDSCAN_MODEL_POLL_INTERVAL_S": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with running_service(args.port, env, startup_timeout_s=120) as server:
        result = asyncio.run(run(args, f"http://127.0.0.1:{args.port}", server.pid))
    return write_result(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())

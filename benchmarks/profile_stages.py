"""Where a request's CPU goes: the service under wrk load, sampled by py-spy, each sample put in a stage.

    python -m benchmarks.profile_stages --data ../shared/datasets

Starts `medscan serve` with its defaults, posts one real test image as a multipart form (as curl -F and
browsers do) at a given concurrency, and samples every thread of the server with py-spy (`pip install
py-spy`) meanwhile. Writes a flame graph (SVG) and a table of CPU milliseconds per request by stage, beside
the service's own per-stage latency metrics (/metrics, mean per image) over the same window.
Results: benchmarks/results/serving-profile.{svg,md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
from collections import Counter
from pathlib import Path

from benchmarks.serving import ROOT, systems, test_image, wait_ready, wrk

# (stage, pattern on a frame "function (file:line)"): the deepest frame of a sample that matches names its stage,
# so that the decoder called from the pipeline counts as decoding, not as the pipeline.
STAGES: list[tuple[str, str]] = [
    ("idle (waiting, not CPU)", r"^(select|poll|_worker) |epoll|\(threading\.py|queue\.py|_collect \(batching"),
    ("model call", r"quick_execute|call_flat|ConcreteFunction|_Signature|\(tensorflow/|_answer \(batching"),
    ("batching (queue, hand-back)", r"\(batching\.py"),
    ("image: open + header", r"read_header |Image\.open|_open_core|JpegImagePlugin|PngImagePlugin"),
    ("image: decode", r"load_first_frame|ImageFile\.load|ImagingDecoder"),
    ("image: resize + colour", r"to_pixels|to_colour_mode|Image\.resize|Image\.convert|has_no_colour"),
    ("multipart body", r"multipart\.py|formparsers"),
    ("trust layer (calibration, threshold, OOD)", r"_screening|interpret \(|site_shift|scoring\.py"),
    ("answer encoding (JSON)", r"answer \(|orjson|render \(|serialize_response|jsonable"),
    ("socket write", r"RequestResponseCycle\.send"),
    ("HTTP parsing (httptools)", r"data_received|on_headers_complete|on_body|on_message"),
    ("FastAPI routing + parameters", r"solve_dependencies|request_params_to_args|routing\.py"),
    ("middleware (ids, metrics, limits, drain)", r"middleware|observability\.py|shutdown\.py|body_limit\.py"),
    # uvloop runs in C: a sample in Runner.run is its I/O work or its epoll wait, which py-spy cannot tell apart
    ("event loop (uvloop: I/O and epoll wait)", r"base_events|events\.py|tasks\.py|Runner\.run|uvloop"),
]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return "other"


def stage_samples(raw: str) -> Counter[str]:
    """py-spy's raw (collapsed) output: `thread;frame;...;frame count` per line -> samples per stage."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";")[1:])] += int(count)
    return counts


def stage_metrics(port: int) -> dict[str, tuple[float, float]]:
    """medscan_stage_duration_seconds: stage -> (sum of seconds, count), over every model."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = re.match(r'medscan_stage_duration_seconds_(sum|count)\{.*stage="(\w+)".*\} ([0-9.e+-]+)', line)
        if match:
            kind, stage, value = match.groups()
            found.setdefault(stage, [0.0, 0.0])[kind == "count"] += float(value)
    return {stage: (total, count) for stage, (total, count) in found.items()}


def budget(samples: Counter[str], rate: int, requests: int) -> list[dict]:
    """CPU milliseconds per request by stage (idle left out), largest first."""
    busy = {stage: n for stage, n in samples.items() if not stage.startswith("idle")}
    total = sum(busy.values()) or 1
    return [
        {"stage": stage, "ms_per_request": round(n / rate * 1000 / requests, 3), "share": round(n / total, 3)}
        for stage, n in sorted(busy.items(), key=lambda item: -item[1])
    ]


def markdown(result: dict) -> str:
    lines = [
        f"{result['disease']}, concurrency {result['concurrency']}, {result['seconds']} s sampled at "
        f"{result['rate']} Hz: {result['requests_per_second']:.0f} req/s; CPU per request by stage "
        f"(all threads, idle waiting left out): **{result['cpu_ms_per_request']:.2f} ms**",
        "",
        "| stage | CPU ms per request | share |",
        "|---|---|---|",
    ]
    lines += [f"| {row['stage']} | {row['ms_per_request']:.3f} | {row['share']:.0%} |" for row in result["budget"]]
    lines += ["", "The service's own stage metrics over the same window (wall time; `model` is per batch call, the "
              "others per image):", ""]  # fmt: skip
    lines += [f"- {stage}: {ms:.2f} ms" for stage, ms in result["metrics_ms_per_image"].items()]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--disease", default="pneumonia")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args()


def profile_under_load(args: argparse.Namespace, pid: int, image: Path, raw_path: Path) -> tuple[dict, dict, dict]:
    """py-spy's raw stacks (into raw_path) and a flame graph, each over a window of load: (load, stage metrics
    before, after)."""
    url = f"http://127.0.0.1:{args.port}/predict/{args.disease}"
    wrk(url, image, 4, 2)  # warm-up
    before = stage_metrics(args.port)
    load: dict = {}
    # wrk runs the whole sampling window and one second either side, so that every sample is under load
    runner = threading.Thread(target=lambda: load.update(wrk(url, image, args.concurrency, args.seconds + 2)))
    runner.start()
    # --nonblocking: read the stacks without pausing the server, which would slow what is measured
    py_spy = str(ROOT / ".venv" / "bin" / "py-spy")
    profile = [py_spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", str(args.rate), "--nonblocking"]
    subprocess.run([*profile, "--threads", "-f", "raw", "-o", str(raw_path)], check=True, capture_output=True)
    runner.join()
    after = stage_metrics(args.port)
    # a second window for the flame graph (py-spy writes one format per run)
    runner = threading.Thread(target=lambda: wrk(url, image, args.concurrency, args.seconds + 2))
    runner.start()
    svg = args.out / "serving-profile.svg"
    subprocess.run([*profile, "-f", "flamegraph", "-o", str(svg)], check=True, capture_output=True)
    runner.join()
    return load, before, after


def main() -> None:
    args = parse_args()
    image = test_image(args.data, args.disease)
    system = systems(args.port, ROOT / "models")["medscan"]
    process = subprocess.Popen(
        system.command, env={**os.environ, **system.env}, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    raw_path = args.out / "serving-profile.raw.txt"
    try:
        wait_ready(f"http://127.0.0.1:{args.port}/health/ready", process)
        load, before, after = profile_under_load(args, process.pid, image, raw_path)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    samples = stage_samples(raw_path.read_text())
    raw_path.unlink()
    requests = round(load["requests_per_second"] * args.seconds)
    rows = budget(samples, args.rate, requests)
    result = {
        "disease": args.disease,
        "image": image.name,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rate": args.rate,
        "requests_per_second": load["requests_per_second"],
        "cpu_ms_per_request": round(sum(row["ms_per_request"] for row in rows), 3),
        "budget": rows,
        "metrics_ms_per_image": {
            stage: round(
                1000 * (total - before.get(stage, (0, 0))[0]) / max(1, count - before.get(stage, (0, 0))[1]), 3
            )
            for stage, (total, count) in after.items()
        },
    }
    (args.out / "serving-profile.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serving-profile.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

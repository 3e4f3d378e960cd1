"""Serving benchmark: MedScan (its defaults, and the settings they were chosen over) against a tutorial-style
FastAPI service and a BentoML service with adaptive batching, all serving the same SavedModels, under wrk load;
then issue 24's targets, met or missed, from the same run.

    python -m benchmarks.serving --data ../shared/datasets

Needs `wrk` (Debian package) and, for the BentoML peer, `.venv-bench` with bentoml installed
(`python3 -m venv .venv-bench && .venv-bench/bin/pip install 'bentoml==1.4.*' tensorflow-cpu pillow`).
Each server runs alone with every shipped model loaded; wrk (one thread) posts one real test image of
the model's data set at each concurrency. The raw model ceiling R is measured in the same run.
Results: benchmarks/results/serving.json and serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "benchmarks" / "post_image.lua"


@dataclass
class System:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health/ready"


def systems(port: int, models: Path) -> dict[str, System]:
    py = str(ROOT / ".venv" / "bin" / "python")
    base = {"MEDSCAN_MODELS_DIR": str(models), "MEDSCAN_PORT": str(port), "MEDSCAN_LOG_LEVEL": "warning"}
    return {
        "medscan": System("medscan", [py, "-m", "app.cli", "serve"], base),
        "medscan-1thread": System(  # what the default chooses when every model is light (app/runtime/tf_runtime.py)
            "medscan-1thread", [py, "-m", "app.cli", "serve"], {**base, "MEDSCAN_TF_INTRA_OP_THREADS": "1"}
        ),
        "medscan-2workers": System(
            "medscan-2workers", [py, "-m", "app.cli", "serve"], {**base, "MEDSCAN_WORKERS": "2"}
        ),
        "medscan-granian": System(  # the same app under Granian (Rust HTTP) instead of uvicorn + uvloop + httptools
            "medscan-granian",
            [
                str(ROOT / ".venv" / "bin" / "granian"),
                "--interface",
                "asgi",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "app.main:create_app",
            ],  # fmt: skip
            base,
        ),
        "medscan-nobatch": System(
            "medscan-nobatch", [py, "-m", "app.cli", "serve"], {**base, "MEDSCAN_BATCHING": "false"}
        ),
        "tutorial": System(
            "tutorial",
            [
                py,
                "-m",
                "uvicorn",
                "benchmarks.peers.tutorial_service:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            {"MODELS": str(models)},
        ),
        "bentoml": System(
            "bentoml",
            [
                str(ROOT / ".venv-bench" / "bin" / "bentoml"),
                "serve",
                "benchmarks.peers.bentoml_service:Screening",
                "--port",
                str(port),
            ],
            {"MODELS": str(models), "BENTOML_DO_NOT_TRACK": "true"},
            ready_path="/readyz",
        ),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids += [int(c) for c in children]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return round(total / 1024, 1)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def wrk(url: str, image: Path, concurrency: int, seconds: int, timeout_s: int = 10) -> dict:
    """wrk posting `image` as a multipart form, as curl -F and browsers send it."""
    env = {**os.environ, "IMAGE": str(image), "TARGET_PATH": "/" + url.split("/", 3)[3]}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={timeout_s}s", "-s", str(LUA), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("{"))
    return json.loads(line)


def test_image(data: Path, disease: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from training.data.samples import find_samples, split_by_group

    test = split_by_group(find_samples(data, disease)).test
    return test[len(test) // 2].path


def raw_ceiling(models: Path, diseases: list[str]) -> list[dict]:
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "benchmarks.raw_model",
            "--models",
            str(models),
            "--diseases",
            *diseases,
            "--out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out)


def with_synthetic_model(models: Path, size: int) -> tuple[Path, str]:
    """A temporary models folder: every shipped model (linked) plus the synthetic one."""
    folder = Path(tempfile.mkdtemp(prefix="medscan-bench-models-"))
    for disease in models.iterdir():
        if disease.is_dir() and not disease.name.startswith("."):
            (folder / disease.name).symlink_to(disease.resolve())
    # In a child process, so that this driver never starts TensorFlow beside the servers it measures.
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "benchmarks.synthetic_model",
            "--size",
            str(size),
            "--models",
            str(folder),
            "--card-from",
            str(models),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return folder, f"paper{size}"


def run_system(
    system: System,
    port: int,
    images: dict[str, Path],
    levels: list[int],
    seconds: int,
    explain: bool = False,
) -> dict:
    env = {**os.environ, **system.env}
    process = subprocess.Popen(
        system.command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        ready_s = wait_ready(f"http://127.0.0.1:{port}{system.ready_path}", process)
        result: dict[str, Any] = {
            "ready_seconds": round(ready_s, 2),
            "rss_mb_after_start": rss_mb(process.pid),
            "load": {},
        }
        for disease, image in images.items():
            url = f"http://127.0.0.1:{port}/predict/{disease}"
            wrk(url, image, 4, 2)  # warm-up
            result["load"][disease] = {}
            for level in levels:
                result["load"][disease][str(level)] = wrk(url, image, level, seconds)
                print(system.name, disease, level, result["load"][disease][str(level)], flush=True)
            if explain:  # one client at a time: an explained answer's latency beside a plain one's
                result.setdefault("explain", {})[disease] = wrk(url + "?explain=true", image, 1, seconds)
        result["rss_mb_after_load"] = rss_mb(process.pid)
        return result
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--diseases", nargs="+", default=["malaria", "pneumonia"])
    parser.add_argument(
        "--systems",
        nargs="+",
        default=[
            "medscan",
            "medscan-1thread",
            "medscan-granian",
            "medscan-2workers",
            "medscan-nobatch",
            "tutorial",
            "bentoml",
        ],  # fmt: skip
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--synthetic-size",
        type=int,
        default=None,
        help="also serve benchmarks/synthetic_model.py's paper CNN at this size (e.g. 128), "
        "posting the last disease's image",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="serving", help="results file name, without extension")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    images = {d: test_image(args.data, d) for d in args.diseases}
    models = args.models
    if args.synthetic_size:
        models, synthetic = with_synthetic_model(args.models, args.synthetic_size)
        images[synthetic] = images[args.diseases[-1]]
    diseases = list(images)
    report: dict = {
        "images": {d: p.name for d, p in images.items()},
        "seconds_per_level": args.seconds,
        "raw": raw_ceiling(models, diseases),
        "systems": {},
    }
    print("raw", report["raw"], flush=True)
    all_systems = systems(args.port, models)
    for name in args.systems:
        report["systems"][name] = run_system(
            all_systems[name], args.port, images, args.concurrency, args.seconds, explain=name == "medscan"
        )
    # Overload: a small queue bound at concurrency 128: every request must answer 200 or 503 in time.
    small_queue = System(
        "medscan-queue8", all_systems["medscan"].command, {**all_systems["medscan"].env, "MEDSCAN_MAX_QUEUE": "8"}
    )
    report["overload"] = run_system(
        small_queue, args.port, {args.diseases[-1]: images[args.diseases[-1]]}, [128], args.seconds
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = []
    for raw in report["raw"]:
        lines.append(
            f"- **{raw['disease']}** ({'x'.join(map(str, raw['input']))}, {raw['signature']}): raw R = "
            f"{raw['R_images_per_second']} img/s (batch {raw['R_batch_size']}), single call "
            f"p50 {raw['single_call_ms']['p50']} ms back to back, "
            f"{raw['single_call_after_10ms_idle_ms']['p50']} ms after 10 ms idle"
        )
    lines += [
        "",
        "| model | system | concurrency | req/s | p50 ms | p95 ms | p99 ms | 200 | 503 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in report["systems"].items():
        for disease, levels in result["load"].items():
            for level, r in levels.items():
                errors = r["status_other"] + r["socket_errors"] + r["timeouts"]
                lines.append(
                    f"| {disease} | {name} | {level} | {r['requests_per_second']:.0f} | "
                    f"{r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | "
                    f"{r['latency_ms']['p99']:.1f} | {r['status_200']} | {r['status_503']} | {errors} |"
                )
    lines += ["", "| system | start to ready (s) | RSS after start (MB) | RSS after load (MB) |", "|---|---|---|---|"]
    for name, result in {**report["systems"], "medscan, queue bound 8": report["overload"]}.items():
        lines.append(
            f"| {name} | {result['ready_seconds']} | {result['rss_mb_after_start']} | {result['rss_mb_after_load']} |"
        )
    overload = next(iter(report["overload"]["load"].values()))["128"]
    lines += [
        "",
        f"Overload (queue bound 8, concurrency 128): {overload['status_200']} x 200, "
        f"{overload['status_503']} x 503, {overload['status_other']} other, "
        f"{overload['timeouts']} timeouts, p99 {overload['latency_ms']['p99']:.1f} ms",
    ]
    return "\n".join(lines + ["", *targets_markdown(report)]) + "\n"


def _at_32(report: dict, model: str, at32: dict) -> list[tuple[str, str, bool]]:
    r = next(row for row in report["raw"] if row["disease"] == model)["R_images_per_second"]
    rps, p99 = at32["requests_per_second"], at32["latency_ms"]["p99"]
    errors = at32["status_other"] + at32["socket_errors"] + at32["timeouts"] + at32["status_503"]
    found = [(f"{model}, concurrency 32: >= 0.5 x R", f"{rps:.0f} req/s = {rps / r:.2f} x R ({r:.0f})", rps >= 0.5 * r)]
    tutorial = report["systems"].get("tutorial", {}).get("load", {}).get(model, {}).get("32")
    if tutorial:
        ratio = rps / tutorial["requests_per_second"]
        found.append((f"{model}, concurrency 32: >= 2.5 x the tutorial-style service", f"{ratio:.2f} x", ratio >= 2.5))
    found.append(
        (
            f"{model}, concurrency 32: p99 <= 60 ms, no errors",
            f"p99 {p99:.1f} ms, {errors} errors",
            p99 <= 60 and errors == 0,
        )
    )
    return found


def targets(report: dict, model: str = "pneumonia", colour_model: str = "malaria") -> list[tuple[str, str, bool]]:
    """Issue 24's targets: (what, measured, met) from one run."""
    raw = {r["disease"]: r for r in report["raw"]}
    systems = report["systems"]
    ours = systems.get("medscan")
    if ours is None or model not in raw:
        return []
    at32, at1 = ours["load"][model].get("32"), ours["load"][model].get("1")
    found = _at_32(report, model, at32) if at32 else []
    if at1:
        single = raw[model]["single_call_ms"]["p50"]
        p50 = at1["latency_ms"]["p50"]
        found.append(
            (
                f"{model}, concurrency 1: p50 <= single model call + 1.0 ms",
                f"{p50:.2f} ms vs {single:.2f} + 1.0 ms",
                p50 <= single + 1.0,
            )
        )
    colour = ours["load"].get(colour_model, {}).get("32")
    if colour and colour_model in raw:
        r = raw[colour_model]["R_images_per_second"]
        rps = colour["requests_per_second"]
        found.append(
            (
                f"{colour_model}, concurrency 32: >= 0.5 x R",
                f"{rps:.0f} req/s = {rps / r:.2f} x R ({r:.0f})",
                rps >= 0.5 * r,
            )
        )
    ready = ours["ready_seconds"]
    found.append(("start to ready <= 5 s, every shipped model", f"{ready} s", ready <= 5))
    rss = ours["rss_mb_after_load"]
    found.append(("resident memory <= 800 MB, one worker", f"{rss} MB", rss <= 800))
    explained = ours.get("explain", {}).get(model)
    if explained and at1:
        ratio = explained["latency_ms"]["p50"] / at1["latency_ms"]["p50"]
        found.append(
            (
                f"{model}, ?explain=true <= 3 x a plain answer's latency (p50, concurrency 1)",
                f"{explained['latency_ms']['p50']:.1f} ms = {ratio:.1f} x",
                ratio <= 3,
            )
        )
    return found


def targets_markdown(report: dict) -> list[str]:
    rows = targets(report)
    if not rows:
        return []
    lines = ["| target | measured | met |", "|---|---|---|"]
    return lines + [f"| {what} | {measured} | {'yes' if met else '**no**'} |" for what, measured, met in rows]


if __name__ == "__main__":
    main()

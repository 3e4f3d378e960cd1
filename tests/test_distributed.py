"""tf.distribute for real: two worker processes on localhost train one model together
(MultiWorkerMirroredStrategy over TF_CONFIG); only the chief exports, and its figures match a
single-process run within a stated tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_synthetic_dataset
from tests.live_server import free_port

pytestmark = pytest.mark.slow
TOLERANCE = 0.1  # test accuracy; the two runs differ in global batch and learning rate (scaled with replicas)
TRAIN = ["-m", "training", "train", "malaria", "--epochs", "4", "--batch-size", "16", "--image-size", "48"]


def start_workers(data: Path, outputs: list[Path], strategy: str, checkpoints: Path) -> list[subprocess.Popen]:
    ports = [free_port() for _ in outputs]
    processes = []
    for index, out in enumerate(outputs):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if strategy == "multiworker":
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
            )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    *TRAIN,
                    "--data",
                    str(data),
                    "--out",
                    str(out),
                    "--strategy",
                    strategy,
                    "--checkpoint-dir",
                    str(checkpoints),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finished(processes: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def run_workers(data: Path, outputs: list[Path], strategy: str, checkpoints: Path) -> list[subprocess.CompletedProcess]:
    return finished(start_workers(data, outputs, strategy, checkpoints))


def card(out: Path) -> dict:
    (metadata,) = out.glob("malaria/*/metadata.json")
    return json.loads(metadata.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two workers training together, then one process alone on the same data, each with its checkpoints."""
    root = tmp_path_factory.mktemp("distributed")
    data = write_synthetic_dataset(root / "data", per_class=60, size=48, per_group=4)
    # All three at once: the two workers wait on each other at every step, and the single run uses that time.
    together = start_workers(data, [root / "chief", root / "worker"], "multiworker", root / "checkpoints")
    alone = start_workers(data, [root / "single"], "mirrored", root / "single-checkpoints")
    results, (single,) = finished(together), finished(alone)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in results[0].stdout and "the chief exports" in results[1].stdout
    assert single.returncode == 0, single.stderr[-3000:]
    return root


def test_two_workers_train_together_and_only_the_chief_exports(runs: Path) -> None:
    worker = runs / "worker"
    assert not worker.exists() or not list(worker.glob("malaria/*/metadata.json"))
    distributed = card(runs / "chief")
    assert distributed["training"]["settings"]["replicas"] == 2
    assert (runs / "checkpoints" / "checkpoint").exists()  # the chief's checkpoints, to resume from

    alone = card(runs / "single")
    assert alone["training"]["settings"]["replicas"] == 1
    assert abs(distributed["metrics"]["accuracy"] - alone["metrics"]["accuracy"]) <= TOLERANCE
    assert distributed["metrics"]["accuracy"] >= 0.8  # the toy task is learnt


def test_a_restarted_worker_resumes_from_the_last_checkpoint(runs: Path) -> None:
    # The single run's checkpoints hold every epoch: a restart resumes there instead of training again.
    (again,) = run_workers(runs / "data", [runs / "again"], "mirrored", runs / "single-checkpoints")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr
    assert card(runs / "again")["metrics"] == card(runs / "single")["metrics"]

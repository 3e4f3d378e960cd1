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


def run_workers(data: Path, outputs: list[Path], strategy: str, checkpoints: Path) -> list[subprocess.CompletedProcess]:
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
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def card(out: Path) -> dict:
    (metadata,) = out.glob("malaria/*/metadata.json")
    return json.loads(metadata.read_text())


def test_two_workers_train_together_and_only_the_chief_exports(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", per_class=60, size=48, per_group=4)
    chief, worker = tmp_path / "chief", tmp_path / "worker"
    results = run_workers(data, [chief, worker], "multiworker", tmp_path / "checkpoints")
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in results[0].stdout and "the chief exports" in results[1].stdout
    assert not worker.exists() or not list(worker.glob("malaria/*/metadata.json"))
    distributed = card(chief)
    assert distributed["training"]["settings"]["replicas"] == 2
    assert (tmp_path / "checkpoints" / "checkpoint").exists()  # the chief's checkpoints, to resume from

    (single,) = run_workers(data, [tmp_path / "single"], "mirrored", tmp_path / "single-checkpoints")
    assert single.returncode == 0, single.stderr[-3000:]
    alone = card(tmp_path / "single")
    assert alone["training"]["settings"]["replicas"] == 1
    assert abs(distributed["metrics"]["accuracy"] - alone["metrics"]["accuracy"]) <= TOLERANCE
    assert distributed["metrics"]["accuracy"] >= 0.8  # the toy task is learnt


def test_a_restarted_worker_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", per_class=30, size=48)
    checkpoints = tmp_path / "checkpoints"
    (first,) = run_workers(data, [tmp_path / "a"], "mirrored", checkpoints)
    assert first.returncode == 0, first.stderr[-3000:]
    (again,) = run_workers(data, [tmp_path / "b"], "mirrored", checkpoints)  # every epoch already done
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr

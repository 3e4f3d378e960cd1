from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from app.contract.memory import freeze_loaded_objects

FAULTS_PER_ROUND = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from app.contract.memory import keep_freed_memory
    assert keep_freed_memory()
MB = 1024 * 1024 // 8


def step():  # like a training step: a few large buffers alive at once, then all freed
    buffers = [np.ones(size * MB) for size in (8, 8, 8, 2)]
    del buffers


for _ in range(5):  # settle
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = faults_per_round("default"), faults_per_round("tuned")
    assert default > 1000  # by default glibc hands most of the 26 MB back and faults it in again
    assert tuned < default / 20


def test_objects_alive_at_startup_leave_the_full_collections() -> None:
    loaded = [{"weights": [index]} for index in range(20_000)]  # stands in for TensorFlow's objects
    try:
        freeze_loaded_objects()
        tracked = {id(obj) for obj in gc.get_objects(generation=2)}
        assert not any(id(obj) in tracked for obj in loaded[::1000])
        assert gc.is_tracked(loaded[0])  # still a normal object, just out of the collector's scans
    finally:
        gc.unfreeze()

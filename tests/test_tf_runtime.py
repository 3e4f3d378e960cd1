"""How many threads TensorFlow gets: the setting, or a choice from the cores a container really has."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.tf_runtime import available_cores, intra_op_threads


@pytest.mark.parametrize(("setting", "cores", "threads"), [(0, 1, 1), (0, 2, 1), (0, 4, 3), (0, 16, 15), (3, 2, 3)])
def test_the_setting_wins_else_one_core_is_left_to_the_event_loop(setting: int, cores: int, threads: int) -> None:
    assert intra_op_threads(setting, cores) == threads


def test_a_container_quota_caps_the_cores(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # 1 CPU
    assert available_cores(quota) == 1
    quota.write_text("50000 100000\n")  # half a CPU still runs one thread
    assert available_cores(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cores(quota) == affinity
    assert available_cores(tmp_path / "absent") == affinity
    quota.write_text("garbage")
    assert available_cores(quota) == affinity

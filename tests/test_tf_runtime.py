from __future__ import annotations

import pytest

from app.tf_runtime import serving_intra_op_threads


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_one_core_is_left_to_the_event_loop(cores: int, threads: int) -> None:
    assert serving_intra_op_threads(cores) == threads


def test_cores_are_read_from_this_process_affinity() -> None:
    import os

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert serving_intra_op_threads() == max(1, expected - 1)

"""TensorFlow process settings for serving; must run before TensorFlow does any work."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app.memory import keep_freed_memory

log = logging.getLogger("medscan.tf")

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup v2), so that
    a pod limited to 1 CPU on a 16-core node counts 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file, or an unexpected one: no quota known
        pass
    return max(1, cores)


def intra_op_threads(setting: int, cores: int) -> int:
    """The threads one TensorFlow op may use: the setting, or (0) the fastest measured choice for the machine.

    Requests cost the event loop more CPU than the batched model call does (benchmarks/results/serving.md:
    on 2 cores, one op thread served 1.2-1.3x the requests of two at concurrency 32), so on up to 2 cores
    the model takes one and leaves the other to the loop; on more, it takes all but one."""
    if setting > 0:
        return setting
    return 1 if cores <= 2 else cores - 1


def configure(intra_op_setting: int, inter_op_threads: int) -> int:
    """Set TensorFlow's thread pools; returns the intra-op threads chosen (0 for inter-op: TensorFlow's choice)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out of the service log
    keep_freed_memory()
    import tensorflow as tf

    cores = available_cores()
    intra = intra_op_threads(intra_op_setting, cores)
    log.info(
        "TensorFlow threads: %d per op (%s, %d cores available), %d ops at once",
        intra,
        "MEDSCAN_TF_INTRA_OP_THREADS" if intra_op_setting else "chosen for the cores",
        cores,
        inter_op_threads,
    )
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # already initialised (a second app in one process, as in tests): keep what it has
        log.debug("TensorFlow threads already set; keeping them")
    return intra

"""TensorFlow process settings for serving; must run before TensorFlow does any work."""

from __future__ import annotations

import logging
import os

from app.memory import keep_freed_memory

log = logging.getLogger("medscan.tf")


def serving_intra_op_threads(cores: int | None = None) -> int:
    """One TensorFlow thread per core but one: that core is left to the event loop, which parses,
    decodes and answers requests. Measured on 2 cores: pneumonia at concurrency 32 went from ~410 to
    ~470 req/s and malaria from ~555 to ~600 with 1 thread instead of 2, p99 down by a third."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def configure(intra_op_threads: int | None, inter_op_threads: int) -> None:
    """Set TensorFlow's thread pools (None: `serving_intra_op_threads()`; 0: TensorFlow's choice)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out of the service log
    keep_freed_memory()
    import tensorflow as tf

    if intra_op_threads is None:
        intra_op_threads = serving_intra_op_threads()
    log.info("TensorFlow threads: %d per op, %d ops at once", intra_op_threads, inter_op_threads)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # already initialised (a second app in one process, as in tests): keep what it has
        log.debug("TensorFlow threads already set; keeping them")

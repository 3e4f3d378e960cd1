"""TensorFlow process settings for serving; must run before TensorFlow does any work."""

from __future__ import annotations

import logging
import os

from app.memory import keep_freed_memory

log = logging.getLogger("medscan.tf")


def configure(intra_op_threads: int, inter_op_threads: int) -> None:
    """Set TensorFlow's thread pools (0: TensorFlow's choice, one per core)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out of the service log
    keep_freed_memory()
    import tensorflow as tf

    log.info("TensorFlow threads: %d per op, %d ops at once", intra_op_threads, inter_op_threads)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # already initialised (a second app in one process, as in tests): keep what it has
        log.debug("TensorFlow threads already set; keeping them")

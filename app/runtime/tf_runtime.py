"""TensorFlow process settings for serving; must run before TensorFlow does any work."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app.contract.memory import keep_freed_memory
from app.contract.model_card import read_card
from app.contract.model_store import METADATA_FILE, disease_names, versions

log = logging.getLogger("medscan.tf")

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Pixels the network sees per image (input side squared, times the views it answers over) up to which a model
# is light: the event loop's work per request costs more CPU than the model's, so the loop gets a core.
LIGHT_MODEL_PIXELS = 64 * 64


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


def heaviest_model_pixels(models_dir: Path) -> int:
    """The most pixels any model in the folder sees per image (its input, times its test-time views), read from
    the cards before TensorFlow starts; 0 when there is none to read."""
    heaviest = 0
    for disease in disease_names(models_dir):
        for version in versions(models_dir, disease):
            try:
                card = read_card(models_dir / disease / str(version) / METADATA_FILE)
            except (OSError, ValueError):  # the registry reports a bad card; it does not decide threads
                continue
            spec = card.input.spec()
            heaviest = max(heaviest, spec.height * spec.width * card.views_per_image())
    return heaviest


def intra_op_threads(setting: int, cores: int, heaviest_pixels: int) -> int:
    """The threads one TensorFlow op may use: the setting, or (0) the fastest measured choice.

    Measured on 2 cores with every shipped model loaded (benchmarks/serving.py, concurrency 32): the blood-smear
    cell model (64x64x3, four views) served 233 requests/s with one op thread and 365 with two, and 230 / 335 in
    a second run; the light chest X-ray model (64x64x1) 911 with one and 867 with two in the first run, where the
    event loop's work per request outweighed the model's, but 657 / 908 in the second. So when every model is
    light the loop keeps a core (all but one for TensorFlow); otherwise TensorFlow takes every core."""
    if setting > 0:
        return setting
    if heaviest_pixels <= LIGHT_MODEL_PIXELS:
        return max(1, cores - 1)
    return cores


def configure(intra_op_setting: int, inter_op_threads: int, models_dir: Path) -> int:
    """Set TensorFlow's thread pools; returns the intra-op threads chosen."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter out of the service log
    # The service never uses Keras, yet `import tensorflow` imports Keras 3 (and scikit-learn, where installed)
    # unless Keras 2 is asked for; that is the tf_keras package, which is not installed, so TensorFlow skips the
    # import: 2.3-2.5 s instead of 3.8-4.0 s and 479 MB instead of 599 MB (test venv), answers bit-identical.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    keep_freed_memory()
    import tensorflow as tf

    if intra_op_setting > 0:  # set: no need to look at the cores or read the cards
        intra, why = intra_op_setting, "MEDSCAN_TF_INTRA_OP_THREADS"
    else:
        cores, heaviest = available_cores(), heaviest_model_pixels(models_dir)
        intra = intra_op_threads(intra_op_setting, cores, heaviest)
        why = f"chosen: {cores} cores available, the heaviest model sees {heaviest:,} pixels per image"
    log.info("TensorFlow threads: %d per op (%s), %d ops at once", intra, why, inter_op_threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # already initialised (a second app in one process, as in tests): keep what it has
        log.debug("TensorFlow threads already set; keeping them")
    return intra

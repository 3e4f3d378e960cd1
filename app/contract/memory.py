"""Memory settings for TensorFlow processes: glibc malloc thresholds and the garbage collector.

TensorFlow allocates and frees many large buffers per step. By default glibc serves each one above
its mmap threshold with a fresh mmap and returns it with munmap, so every step page-faults its
memory in again; on our 2-core VMs that doubled training time (measured: 199 -> 411 img/s for the
50 px CNN, page faults down 25x). Keeping freed memory in the heap avoids that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger("medscan.memory")

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
TOP_PAD_BYTES = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process. Returns False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES),
        )
    )
    log.debug("malloc thresholds raised: %s", done)
    return done


def freeze_loaded_objects() -> None:
    """Move every object alive now (TensorFlow, Keras, the loaded models) out of the collector's reach.

    A process with TensorFlow loaded tracks ~400,000 objects; each full collection walks them all
    (measured: 306 ms with all five models), stalling every request in flight. They live as long
    as the process, so after startup the collector only needs to look at what requests allocate.
    """
    gc.collect()
    gc.freeze()
    log.debug("%d objects frozen", gc.get_freeze_count())


def collect_released_objects() -> None:
    """Free what was frozen and is no longer referenced (a retired model version), and freeze the rest again.

    Frozen objects are never collected, and a loaded model is full of reference cycles: without this, a version
    loaded at start-up kept its memory for good once replaced (a 512 px fundus model: +330 MB, see
    benchmarks/reload_memory.py). One full collection (306 ms with five models loaded) per retired version."""
    if gc.get_freeze_count():
        gc.unfreeze()
        freeze_loaded_objects()


def release_frozen_objects() -> None:
    """Give every frozen object back to the collector (the service stops): its models go once unreferenced.
    Without it, each app started and stopped in one process kept its models (850 MB for the six shipped ones)."""
    gc.unfreeze()

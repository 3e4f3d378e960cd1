"""A memory budget for decoding images: what bounds the service's memory under large uploads.

Each upload's decoded size is estimated from its header before a pixel is decoded (width x height x bands x
bytes per sample, after JPEG's reduced decoding, times the working copies the preparation makes). Decodes are
admitted while their estimates fit the budget together; the others wait up to `MEDSCAN_DECODE_WAIT_S`, then
get 503 with Retry-After. An image whose estimate alone exceeds the budget could never be decoded: 413, with
the limit in words. Measured before the budget (2026-12-03): one 50-megapixel PNG took ~630 MB above idle and
two at once passed the 1.5 GiB limit of our Kubernetes Deployment; 32 large uploads reached 9 GB.

The budget is `MEDSCAN_DECODE_MEMORY_MB`, or by default 70% of what the process may still use once its models
are loaded: the container's cgroup limit where there is one (else the machine's memory) less its resident size.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from PIL import Image

from app.contract.image_errors import ImageTooLarge
from app.runtime.errors import DecodeBusy

# The decoded image, one converted copy (colour mode, crop) and the allocator's slack; the fundus preparations
# find and crop the disc at full size, which took twice that. Measured on a 7070 x 7070 RGB PNG (150 MB
# decoded): 389 MB above the process's start for a gray model, 781 MB for a disc-cropping one.
WORKING_COPIES = 3
FUNDUS_WORKING_COPIES = 6
BYTES_PER_SAMPLE = {"I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4, "1": 1}
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
DEFAULT_SHARE = 0.7  # of what is left once the models are loaded: the rest for requests' other buffers
MINIMUM_BUDGET = 256 * 2**20


def memory_limit_bytes() -> int:
    """What this process may use: the cgroup (v2, then v1) limit where one is set, else the machine's memory."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isascii() and text.isdigit() and int(text) < machine:  # "max" or a huge v1 number: no limit
            return int(text)
    return machine


def resident_bytes() -> int:
    """This process's resident memory now (Linux), 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def default_budget_bytes() -> int:
    """70% of what the process may still use once its models are loaded (at least 256 MiB): under our
    Kubernetes Deployment's 1,536 MiB with ~900 MB resident, about 445 MB, one 50-megapixel RGB PNG at a time."""
    return max(MINIMUM_BUDGET, int((memory_limit_bytes() - resident_bytes()) * DEFAULT_SHARE))


def reduced_size(header: Image.Image, side: int) -> tuple[int, int]:
    """The size a JPEG decodes at with draft mode towards `side` (scales 1/2, 1/4, 1/8 that keep both sides at
    least `side`); other formats decode whole."""
    width, height = header.size
    if header.format not in {"JPEG", "MPO"} or side <= 0:
        return width, height
    scale = 1
    while scale < 8 and math.ceil(width / (scale * 2)) >= side and math.ceil(height / (scale * 2)) >= side:
        scale *= 2
    return math.ceil(width / scale), math.ceil(height / scale)


def decoded_bytes(header: Image.Image, side: int = 0, copies: int = WORKING_COPIES) -> int:
    """Estimated peak bytes of decoding and preparing an image from its header, `side` the smallest side a
    reduced JPEG decode may give, `copies` the full-size working copies its preparation makes."""
    width, height = reduced_size(header, side)
    bands = len(header.getbands())
    per_sample = BYTES_PER_SAMPLE.get(header.mode, 1)
    return width * height * max(bands, 3) * per_sample * copies


def default_decode_threads(cores: int) -> int:
    """Large decodes at once: all cores but one, so that small requests keep a core (2 cores: one at a time)."""
    return max(1, cores - 1)


class DecodeBudget:
    """Bytes of decoding in flight, admitted while they fit `limit_bytes` together and while fewer than
    `max_decodes` decode at once. The second bound is for time, not memory: two 50-megapixel decodes on 2 cores
    took both, and small requests beside them waited (p99 315 ms, 2026-12-03)."""

    def __init__(self, limit_bytes: int, wait_s: float, max_decodes: int = 1_000_000) -> None:
        self.limit_bytes = limit_bytes
        self.wait_s = wait_s
        self.max_decodes = max_decodes
        self.in_use = 0
        self.decoding = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        if size > self.limit_bytes:
            raise ImageTooLarge(
                f"decoding this image takes about {size / 2**20:,.0f} MiB, more than the "
                f"{self.limit_bytes / 2**20:,.0f} MiB the service decodes at once (MEDSCAN_DECODE_MEMORY_MB); "
                "send a smaller image"
            )
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(self._fits(size)), self.wait_s)
            except TimeoutError:
                raise DecodeBusy(retry_after_s=max(1, math.ceil(self.wait_s))) from None
            self.in_use += size
            self.decoding += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= size
                self.decoding -= 1
                self._changed.notify_all()

    def _fits(self, size: int):
        return lambda: self.in_use + size <= self.limit_bytes and self.decoding < self.max_decodes

"""A small PNG encoder for the Grad-CAM overlay: 8-bit RGB, every row Up-filtered, deflated by ISA-L.

Encoding the overlay was most of an explained answer's time. Pillow's encoder chooses a filter per row and
deflates with zlib: 2.8 ms for a 224 px chest X-ray's overlay at its fastest setting (level 1, run-length).
Here one filter for every row (Up: the difference to the row above, one numpy subtraction) and Intel's ISA-L
deflate (python-isal) take 0.44 ms for 57 KB instead of 52 KB (benchmarks/explain_png.py). Any PNG reader
decodes it: the format allows one filter type per row and any valid deflate stream.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
UP_FILTER = 2  # PNG filter type: each byte minus the byte above it
DEFLATE_LEVEL = 1  # ISA-L's levels are 0-3; 1 was as small as 2 on the overlays and faster


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_rgb(pixels: np.ndarray) -> bytes:
    """H x W x 3 uint8 -> the bytes of a PNG file."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ValueError(f"expected a non-empty H x W x 3 uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = UP_FILTER
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wraps modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", isal_zlib.compress(filtered.tobytes(), DEFLATE_LEVEL))
        + _chunk(b"IEND", b"")
    )

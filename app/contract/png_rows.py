"""Whether a PNG's image data holds every row its header promises.

Pillow decodes a PNG whose compressed stream ends cleanly before the last row without a word, the missing rows
black (measured with Pillow 11: a 300 x 300 image with 100 rows of data loads as 300 x 300). libpng calls that
"Not enough image data"; so do we (`preprocessing.decode_opened`, before anything is decoded): such a file is
answered with 422, not screened half black. A download cut short is refused by this check too.

The check inflates the IDAT chunks again, counting bytes without keeping them (64 kB at a time), so it costs
time like the decode's own inflating and next to no memory.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey + alpha, RGBA
# Adam7's seven passes: (first column, first row, column step, row step)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PIECE = 1 << 16


def opened_missing_row_bytes(image: Image.Image) -> int:
    """`missing_row_bytes` of an image opened from bytes in memory whose pixels and EXIF are not read yet (Pillow
    then lets go of the bytes); 0 for any other image."""
    source = getattr(image, "fp", None)  # an ImageFile's; Pillow's stubs do not declare it on Image
    if image.format != "PNG" or not isinstance(source, io.BytesIO):
        return 0
    with source.getbuffer() as data:  # the bytes as sent, not a copy
        return missing_row_bytes(data)


def missing_row_bytes(data: bytes | memoryview) -> int:
    """How many bytes of filtered rows the PNG `data` lacks (0 when complete, or when it is not a PNG this check
    can read: Pillow's decoder has the last word on those)."""
    header = _header(data)
    if header is None:
        return 0
    width, height, bit_depth, colour_type, interlaced = header
    if colour_type not in CHANNELS:
        return 0
    bits = CHANNELS[colour_type] * bit_depth
    expected = _interlaced_size(width, height, bits) if interlaced else _rows_size(width, height, bits)
    return max(0, expected - _inflated_size(_idat_chunks(data), expected))


def _header(data: bytes | memoryview) -> tuple[int, int, int, int, int] | None:
    start = bytes(data[:29])
    if not start.startswith(SIGNATURE) or len(start) < 29 or start[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", start[16:29])
    return width, height, bit_depth, colour_type, interlace


def _rows_size(width: int, height: int, bits: int) -> int:
    """Bytes of `height` filtered rows: a filter byte, then the row's pixels packed to whole bytes."""
    return 0 if width == 0 or height == 0 else height * (1 + (width * bits + 7) // 8)


def _interlaced_size(width: int, height: int, bits: int) -> int:
    return sum(_rows_size(_in_pass(width, x, dx), _in_pass(height, y, dy), bits) for x, y, dx, dy in ADAM7)


def _in_pass(side: int, first: int, step: int) -> int:
    """How many of a side's pixels a pass takes: every `step`-th from `first`."""
    return max(0, (side - first + step - 1) // step)


def _idat_chunks(data: bytes | memoryview) -> Iterator[memoryview]:
    view, position = memoryview(data), len(SIGNATURE)
    while position + 8 <= len(view):
        length, kind = struct.unpack(">I4s", view[position : position + 8])
        if kind == b"IDAT":
            yield view[position + 8 : position + 8 + length]
        elif kind == b"IEND":
            return
        position += 12 + length  # length, type, data, CRC


def _inflated_size(chunks: Iterator[memoryview], enough: int) -> int:
    """Bytes the chunks inflate to, counted up to `enough` (no further inflating is needed to know)."""
    inflater, size = zlib.decompressobj(), 0
    try:
        for chunk in chunks:
            for start in range(0, len(chunk), PIECE):
                pending = bytes(chunk[start : start + PIECE])
                while pending and size < enough:
                    size += len(inflater.decompress(pending, PIECE))
                    pending = inflater.unconsumed_tail
                if size >= enough or inflater.eof:
                    return size
    except zlib.error:  # damaged data: Pillow's decoder says so in its own words
        return enough
    return size

"""A PNG whose image data ends cleanly before its last row is refused; every complete PNG passes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.contract.image_errors import CorruptImage
from app.contract.png_rows import missing_row_bytes
from app.contract.preprocessing import ColourMode, InputSpec, decode, load_first_frame, read_header

GREY = InputSpec(height=32, width=32, colour_mode=ColourMode.GRAYSCALE)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(width: int, height: int, rows_sent: int) -> bytes:
    """An 8-bit grey PNG whose one, properly ended zlib stream holds only `rows_sent` of its rows."""
    rows = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(width)) for y in range(rows_sent))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def pillow_png(mode: str, size: tuple[int, int], interlace: bool) -> bytes:
    values = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(values, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **({"interlace": 1} if interlace else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_complete_pngs_of_every_colour_type_depth_and_interlace_miss_nothing(mode: str, interlace: bool) -> None:
    data = pillow_png(mode, (37, 23), interlace)  # sides that no Adam7 pass divides evenly
    assert missing_row_bytes(data) == 0
    assert load_first_frame(read_header(data, max_pixels=10**6)).size == (37, 23)


def test_image_data_that_ends_early_is_counted_and_refused() -> None:
    data = grey_png(300, 300, rows_sent=100)
    assert Image.open(io.BytesIO(data)).load() is not None  # Pillow itself fills the 200 rows with black
    assert missing_row_bytes(data) == 200 * (1 + 300)
    with pytest.raises(CorruptImage, match="60,200 bytes before its last row"):
        decode(data, GREY, max_pixels=10**6)


def test_the_same_image_whole_passes() -> None:
    data = grey_png(300, 300, rows_sent=300)
    assert missing_row_bytes(data) == 0
    assert np.asarray(load_first_frame(read_header(data, max_pixels=10**6)))[-1, 1] == (7 + 299) % 256


def test_a_download_cut_short_is_refused_too_and_other_formats_are_left_to_their_decoders() -> None:
    assert missing_row_bytes(grey_png(30, 30, 30)[:60]) == 30 * 31
    with pytest.raises(CorruptImage):
        decode(grey_png(30, 30, 30)[:60], GREY, max_pixels=10**6)
    assert missing_row_bytes(b"GIF89a") == 0

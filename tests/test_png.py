"""The overlay's PNG encoder: any reader decodes exactly the pixels, at any size, and bad input is refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.runtime.png import SIGNATURE, encode_rgb


def decoded(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 7), (9, 1), (224, 224), (61, 333)])
def test_pillow_decodes_exactly_the_pixels_encoded(height: int, width: int) -> None:
    pixels = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert np.array_equal(decoded(encode_rgb(pixels)), pixels)


def test_rows_that_differ_by_wrapping_past_255_decode_exactly() -> None:
    """The Up filter subtracts modulo 256: a row of 0 under a row of 255 must come back as 0, not -255."""
    pixels = np.zeros((4, 5, 3), np.uint8)
    pixels[0::2] = 255
    assert np.array_equal(decoded(encode_rgb(pixels)), pixels)


def test_a_non_contiguous_view_is_encoded_as_its_pixels() -> None:
    base = np.random.default_rng(1).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    view = base[::2, ::3, :3]  # strided, and a channel dropped
    assert np.array_equal(decoded(encode_rgb(view)), view)


def test_every_chunk_carries_its_length_and_a_valid_crc() -> None:
    data = encode_rgb(np.full((3, 3, 3), 7, np.uint8))
    assert data.startswith(SIGNATURE)
    position, kinds = len(SIGNATURE), []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        kinds.append(kind)
        position += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"] and position == len(data)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4), np.uint8),  # gray
        np.zeros((4, 4, 4), np.uint8),  # RGBA
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_anything_but_a_non_empty_rgb_uint8_array_is_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        encode_rgb(pixels)

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from app.contract.image_errors import CorruptImage, ImageTooLarge, UnsupportedImage
from app.contract.preprocessing import (
    COLOUR_PICTURE_CHROMA,
    ColourMode,
    InputSpec,
    decode,
    decode_opened,
    is_colour_picture,
    mean_chroma,
    read_header,
    scale,
    to_pixels,
)
from tests.images import gradient, image_bytes, model_input

GRAY = InputSpec(height=20, width=24, colour_mode=ColourMode.GRAYSCALE)
RGB = InputSpec(height=20, width=24, colour_mode=ColourMode.RGB)
LIMIT = 50_000_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("spec", [GRAY, RGB], ids=["grayscale", "rgb"])
def test_every_supported_format_becomes_the_model_input_shape(fmt: str, spec: InputSpec) -> None:
    x = model_input(image_bytes(gradient(), fmt), spec, max_pixels=LIMIT)
    assert x.shape == spec.shape
    assert x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.max() > 0.5  # the gradient survived decoding


def test_scale_is_float32_division_by_255() -> None:
    pixels = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(scale(pixels), np.array([[0, 1, 128, 255]], np.float32) / np.float32(255))


def test_squash_resize_ignores_aspect_ratio_and_reports_original_size() -> None:
    decoded = decode(image_bytes(gradient(100, 10)), RGB, max_pixels=LIMIT)
    assert decoded.pixels.shape == (20, 24, 3)
    assert (decoded.width, decoded.height) == (100, 10)


def test_exif_orientation_is_applied() -> None:
    image = gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode(image_bytes(image, "JPEG", exif=exif.tobytes(), quality=95), RGB, max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (20, 40)


def test_alpha_is_flattened_onto_black() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 255, 255, 0))
    pixels = decode(image_bytes(rgba), RGB, max_pixels=LIMIT).pixels
    assert pixels.max() == 0


def test_palette_with_transparency_and_la_images_convert() -> None:
    palette = gradient().convert("P")
    palette.info["transparency"] = 0
    assert decode(image_bytes(palette), GRAY, max_pixels=LIMIT).pixels.shape == GRAY.shape
    la = gradient(mode="LA")
    assert decode(image_bytes(la), RGB, max_pixels=LIMIT).pixels.shape == RGB.shape


def test_16_bit_images_are_scaled_not_clipped() -> None:
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    pixels = decode(image_bytes(image), GRAY, max_pixels=LIMIT).pixels
    assert np.all(np.abs(pixels.astype(int) - 128) <= 1)


def test_cmyk_jpeg_converts_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    pixels = decode(image_bytes(cmyk, "JPEG", quality=95), RGB, max_pixels=LIMIT).pixels
    red, green, blue = pixels[..., 0].mean(), pixels[..., 1].mean(), pixels[..., 2].mean()
    assert red > 200 and green < 60 and blue < 60


def test_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (10, 10), 250), Image.new("L", (10, 10), 5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    pixels = decode(buffer.getvalue(), GRAY, max_pixels=LIMIT).pixels
    assert pixels.min() > 200


def test_not_an_image_is_unsupported() -> None:
    with pytest.raises(UnsupportedImage):
        decode(b"%PDF-1.4 this is not an image", GRAY, max_pixels=LIMIT)


def test_unsupported_image_format_is_named() -> None:
    with pytest.raises(UnsupportedImage, match="WEBP"):
        decode(image_bytes(gradient(), "WEBP"), GRAY, max_pixels=LIMIT)


def test_truncated_image_is_corrupt() -> None:
    data = image_bytes(gradient(200, 200), "PNG")
    with pytest.raises(CorruptImage):
        decode(data[: len(data) // 2], GRAY, max_pixels=LIMIT)


def test_a_tiff_whose_strip_offset_is_a_fraction_is_corrupt() -> None:
    # Found by fuzzing: Pillow's TIFF loader raised TypeError (not OSError) seeking to a RATIONAL offset, a 500.
    data = bytearray(image_bytes(gradient(8, 6), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]  # little-endian ("II"): the first directory's offset
    entries = [ifd + 2 + 12 * i for i in range(struct.unpack_from("<H", data, ifd)[0])]
    (strip_offsets,) = [at for at in entries if struct.unpack_from("<H", data, at)[0] == 273]
    struct.pack_into("<H", data, strip_offsets + 2, 5)  # its type: LONG -> RATIONAL
    with pytest.raises(CorruptImage, match="truncated or corrupt"):
        decode(bytes(data), GRAY, max_pixels=LIMIT)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    data = image_bytes(Image.new("L", (300, 300)), "PNG")
    # Cut the data off: had the pixels been decoded, this would be a CorruptImage instead.
    with pytest.raises(ImageTooLarge, match="90,000 pixels"):
        decode(data[:100], GRAY, max_pixels=300 * 299)


def test_header_is_checked_without_decoding_and_damage_shows_when_decoded() -> None:
    data = image_bytes(gradient(200, 150), "PNG")
    header = read_header(data[: len(data) // 2], max_pixels=LIMIT)  # only the header is read
    assert header.size == (200, 150)
    with pytest.raises(CorruptImage):
        decode_opened(header, GRAY)
    whole = decode_opened(read_header(data, max_pixels=LIMIT), GRAY)
    assert np.array_equal(whole.pixels, decode(data, GRAY, max_pixels=LIMIT).pixels)


def test_reduced_jpeg_decoding_keeps_the_target_resolution() -> None:
    big = gradient(800, 800)
    decoded = decode(image_bytes(big, "JPEG", quality=95), GRAY, max_pixels=LIMIT)
    reference = to_pixels(big, GRAY)
    assert decoded.pixels.shape == reference.shape
    assert np.abs(decoded.pixels.astype(int) - reference.astype(int)).mean() < 3


def test_ultrasound_exported_as_rgb_or_rgba_png_gives_the_grayscale_models_input_of_the_gray_original() -> None:
    spec = InputSpec(64, 64, ColourMode.GRAYSCALE)
    gray = gradient(300, 220, "L")
    reference = decode(image_bytes(gray), spec, max_pixels=10**7).pixels
    for mode in ("RGB", "RGBA"):
        sent = decode(image_bytes(gray.convert(mode)), spec, max_pixels=10**7)
        assert np.array_equal(sent.pixels, reference), mode
        assert not sent.grayscale_source  # the warning is for colour models only


def test_colour_cells_of_any_size_keep_their_colour_and_are_not_called_gray() -> None:
    spec = InputSpec(64, 64, ColourMode.RGB)
    for side in (40, 400):
        cell = gradient(side, side)  # red and green ramps: colour everywhere
        decoded = decode(image_bytes(cell, "JPEG", quality=94), spec, max_pixels=10**7)
        assert decoded.pixels.shape == (64, 64, 3)
        assert np.abs(decoded.pixels[..., 0].astype(int) - decoded.pixels[..., 1]).max() > 100
        assert not decoded.grayscale_source
    gray_cell = decode(image_bytes(gradient(120, 120, "L").convert("RGB"), "JPEG"), spec, max_pixels=10**7)
    assert gray_cell.grayscale_source and gray_cell.pixels.shape == (64, 64, 3)


def test_a_colour_picture_sent_to_a_gray_modality_model_is_marked_and_gray_exports_are_not() -> None:
    gray_spec = InputSpec(64, 64, ColourMode.GRAYSCALE)
    photograph = gradient(3000, 2000)  # red and green ramps: colour throughout, as a fundus photograph
    sent = decode(image_bytes(photograph, "JPEG", quality=90), gray_spec, max_pixels=10**8)
    assert sent.colour_source and sent.pixels.shape == (64, 64, 1)
    assert not decode(image_bytes(photograph), InputSpec(64, 64, ColourMode.RGB), max_pixels=10**8).colour_source
    # Gray exports as RGB, RGBA or JPEG, and a gray scan with a yellow caliper mark and coloured text, are not.
    ultrasound = gradient(300, 220, "L").convert("RGB")
    marked = ultrasound.copy()
    marked.paste((255, 255, 0), (100, 100, 112, 112))
    marked.paste((0, 200, 255), (10, 200, 120, 212))
    for image, fmt in ((ultrasound, "PNG"), (ultrasound.convert("RGBA"), "PNG"), (ultrasound, "JPEG"), (marked, "PNG")):
        assert not decode(image_bytes(image, fmt), gray_spec, max_pixels=10**7).colour_source, (image.mode, fmt)
    # On either side of the threshold: a gray image tinted by less than it, and by more.
    assert mean_chroma(tinted(ultrasound, COLOUR_PICTURE_CHROMA - 4)) < COLOUR_PICTURE_CHROMA
    assert not is_colour_picture(tinted(ultrasound, COLOUR_PICTURE_CHROMA - 4))
    assert is_colour_picture(tinted(ultrasound, COLOUR_PICTURE_CHROMA + 4))


def tinted(image: Image.Image, chroma: float) -> Image.Image:
    """The image with its red channel raised by `chroma` levels (so its mean chroma is about that)."""
    pixels = np.asarray(image, dtype=np.int16).copy()
    pixels[..., 0] = np.clip(pixels[..., 0] + round(chroma), 0, 255)
    pixels[..., 1:] = np.clip(pixels[..., 1:], 0, 255 - round(chroma))
    return Image.fromarray(pixels.astype(np.uint8))

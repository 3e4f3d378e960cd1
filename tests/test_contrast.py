"""CLAHE for X-rays and ultrasound: local contrast evened out, nothing invented, the same in every door."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.contract.contrast import equalise
from app.contract.preprocessing import ColourMode, Enhancement, InputSpec, decode, describe
from tests.images import gradient, image_bytes

CONTRAST = InputSpec(64, 64, ColourMode.GRAYSCALE, Enhancement.CONTRAST)


def unevenly_exposed(seed: int = 0) -> Image.Image:
    """A film dark on the left with faint ribs (+-4 grey levels), bright on the right with clear ones (+-12)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.arange(256)[:, None], np.arange(256)[None, :]
    left = columns < 128
    pixels = np.where(left, 40, 170) + np.where(left, 4, 12) * np.sin(rows / 6.0) + rng.normal(0, 1, (256, 256))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def rib_contrast(pixels: np.ndarray) -> tuple[float, float]:
    """How much the rows vary in the left and right halves of a 64 px image (the ribs run along rows)."""
    values = pixels[..., 0].astype(float)
    return values[:, 4:28].std(axis=0).mean(), values[:, 36:60].std(axis=0).mean()


def test_faint_structure_in_a_dark_region_is_stretched_towards_the_bright_ones() -> None:
    plain = decode(image_bytes(unevenly_exposed()), InputSpec(64, 64, ColourMode.GRAYSCALE), max_pixels=10**6).pixels
    equalised = decode(image_bytes(unevenly_exposed()), CONTRAST, max_pixels=10**6).pixels
    assert equalised.shape == CONTRAST.shape and equalised.dtype == np.uint8
    (faint_before, clear_before), (faint_after, clear_after) = rib_contrast(plain), rib_contrast(equalised)
    assert faint_after > 2 * faint_before  # measured: 2.7 -> 8.0 grey levels
    assert clear_after / faint_after < clear_before / faint_before  # and the halves come closer (3.0 -> 2.4)


def test_a_uniform_image_stays_uniform_and_grey_stays_grey() -> None:
    flat = np.asarray(equalise(Image.new("L", (64, 64), 90)))
    assert flat.min() == flat.max()  # the clip limit keeps CLAHE from inventing structure
    grey = np.asarray(equalise(gradient(64, 64).convert("L").convert("RGB")))
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 2  # luma only: no colour cast


def test_the_card_describes_it() -> None:
    assert "CLAHE" in describe(CONTRAST) and "CLAHE" not in describe(InputSpec(64, 64, ColourMode.GRAYSCALE))

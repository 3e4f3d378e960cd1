"""Small synthetic images for tests (never copies of the real data sets)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.contract.preprocessing import InputSpec, decode, scale


def image_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 30, mode: str = "RGB") -> Image.Image:
    """A deterministic image whose pixels differ across the frame (so orientation and resizing show)."""
    x = np.linspace(0, 255, width, dtype=np.float64)[np.newaxis, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, np.newaxis]
    red = np.broadcast_to(x, (height, width))
    green = np.broadcast_to(y, (height, width))
    blue = (red + green) / 2
    rgb = np.stack([red, green, blue], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").convert(mode)


def blob(size: int, infected: bool, seed: int) -> Image.Image:
    """A learnable toy class: 'infected' cells carry a bright spot, 'uninfected' ones do not."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(90, 12, (size, size)).clip(0, 255)
    if infected:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        yy, xx = np.mgrid[:size, :size]
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] = 240
    return Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")


def model_input(data: bytes, spec: InputSpec, *, max_pixels: int = 10**8) -> np.ndarray:
    """Bytes -> float32 array of spec.shape, exactly what the service feeds the model (no batch axis)."""
    return scale(decode(data, spec, max_pixels=max_pixels).pixels)

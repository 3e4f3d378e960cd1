"""Images of no medical kind, made on the spot: what the modality check learns "anything else" from, beside
photographs. Noise, smooth noise, gradients, shapes, stripes and checkerboards, and rendered text, each at a
random size and aspect, in colour or gray."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Maker = Callable[[np.random.Generator, int, int], Image.Image]
WORDS = "patient report page total date signature scan the of and result normal figure table value".split()


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    channels = 3 if rng.random() < 0.7 else 1
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)


def smooth_noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    coarse = rng.integers(0, 256, (int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def gradient(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        t = (x * np.cos(angle) + y * np.sin(angle)) / (width + height)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(x - cx, y - cy) / np.hypot(width, height)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    start, end = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    return Image.fromarray((start + t[..., None] * (end - start)).astype(np.uint8))


def shapes(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 30))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(5, max(6, width // 2))), y0 + int(rng.integers(5, max(6, height // 2)))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        else:
            draw.line((x0, y0, x1, y1), fill=_colour(rng), width=int(rng.integers(1, 8)))
    return image


def stripes(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    period = int(rng.integers(4, 64))
    pattern = ((x // period + y // period) % 2) if rng.random() < 0.5 else ((x // period) % 2)
    low, high = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray(np.where(pattern[..., None] == 1, high, low).astype(np.uint8))


def text(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    background = 255 - int(rng.integers(0, 40))
    image = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(10, 40))
    for row in range(0, height, int(size * 1.5)):
        line = " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))
        draw.text((int(rng.integers(0, 30)), row), line, fill=(int(rng.integers(0, 80)),) * 3, font_size=size)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1))))


MAKERS: tuple[Maker, ...] = (noise, smooth_noise, gradient, shapes, stripes, text)


def synthetic_images(count: int, seed: int) -> list[Image.Image]:
    """`count` images, the makers in turn, each at a random size (64-640 px a side) and aspect."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(64, 640, 2))
        images.append(MAKERS[index % len(MAKERS)](rng, width, height))
    return images

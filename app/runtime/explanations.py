"""Grad-CAM maps as a person sees them: a heatmap in [0, 1] for the answered class and a PNG overlay.

The model's `explain` signature returns a signed map (positive: evidence for `infected`, negative: for
`uninfected`); the heatmap of a class is the positive part for that class (Selvaraju et al., 2017),
scaled from its minimum to its maximum as pytorch-grad-cam does: the map carries a near-constant
floor from the background (measured on a toy task: a quarter of the peak everywhere), which a plain
division by the maximum would leave in. No matplotlib at run time: a small colour map of our own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.contract.scoring import POSITIVE
from app.runtime.png import encode_rgb

OVERLAY_MAX_SIDE = 512  # the overlay is for looking at, not for measuring: keep answers small
DEFAULT_OPACITY = 0.45
# "jet"-like anchors from cold (no evidence) to hot (the strongest evidence).
_ANCHORS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], np.float64)


def class_heatmap(signed_map: np.ndarray, class_index: int) -> np.ndarray:
    """H x W signed Grad-CAM -> H x W in [0, 1] for one class (all zeros where there is no evidence)."""
    evidence = np.maximum(signed_map if class_index == POSITIVE else -signed_map, 0.0).astype(np.float64)
    low, high = float(evidence.min(initial=0.0)), float(evidence.max(initial=0.0))
    return (evidence - low) / (high - low) if high > low else np.zeros_like(evidence)


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """H x W in [0, 1] -> H x W x 3 uint8."""
    positions = np.clip(heatmap, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lower = np.floor(positions).astype(int).clip(0, len(_ANCHORS) - 2)
    fraction = (positions - lower)[..., np.newaxis]
    colours = _ANCHORS[lower] * (1 - fraction) + _ANCHORS[lower + 1] * fraction
    return np.rint(colours).astype(np.uint8)


def overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    opacity: float = DEFAULT_OPACITY,
    region: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """The image (at most OVERLAY_MAX_SIDE px) with the heatmap blended over the region the model saw
    (default: all of it), stretched to that region's size (the model squashes, so the map is squashed back)."""
    base = image.convert("RGB")
    left, top, right, bottom = region or (0, 0, base.width, base.height)
    if max(base.size) > OVERLAY_MAX_SIDE:
        factor = OVERLAY_MAX_SIDE / max(base.size)
        base.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE), Image.Resampling.BILINEAR)
        left, top, right, bottom = (round(v * factor) for v in (left, top, right, bottom))
    box = (left, top, max(right, left + 1), max(bottom, top + 1))
    seen = base.crop(box)
    heat = Image.fromarray(colourise(heatmap), "RGB").resize(seen.size, Image.Resampling.BILINEAR)
    base.paste(Image.blend(seen, heat, opacity), box[:2])
    return base


def png_bytes(image: Image.Image) -> bytes:
    """The overlay as a PNG file, by our fast encoder (app/runtime/png.py)."""
    return encode_rgb(np.asarray(image.convert("RGB")))

"""Contrast normalisation for X-rays and ultrasound: CLAHE (contrast-limited adaptive histogram
equalisation), the modality-standard way to even out the exposure, gain and windowing that differ between
machines. Applied after the resize, at the model's input size, so that an image gives the same pixels
whatever size it was sent or decoded at; identically in training and serving (app/contract/preprocessing.py).
OpenCV's implementation, not our own: it is the reference one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CLIP_LIMIT = 2.0  # OpenCV's usual default: evens out contrast without amplifying speckle and noise
TILE_SIDE = 16  # pixels of the input per tile (a 64 px input: 4 x 4 tiles)
DESCRIPTION = f"contrast: CLAHE on the luma (clip limit {CLIP_LIMIT}, tiles of about {TILE_SIDE} px)"


def equalise(image: Image.Image) -> Image.Image:
    """An 8-bit L or RGB image -> the same with its luma equalised locally (colour kept for RGB)."""
    # Imported on first use: OpenCV costs every process 0.2 s and 31 MB at import (measured), and only a
    # model with this enhancement needs it; none of the shipped ones does.
    import cv2

    tiles = (max(1, image.width // TILE_SIDE), max(1, image.height // TILE_SIDE))
    clahe = cv2.createCLAHE(clipLimit=CLIP_LIMIT, tileGridSize=tiles)
    pixels = np.asarray(image, dtype=np.uint8)
    if image.mode == "L":
        return Image.fromarray(clahe.apply(pixels), "L")
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), "RGB")

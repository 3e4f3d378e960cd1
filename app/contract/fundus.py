"""Fundus photographs made alike before a model sees them: the eye disc cropped, one circular field of
view, and colour and illumination normalised.

Our fundus data comes from two collections whose cameras differ (borders, disc size, cut-off discs,
tint). A model can separate the classes by those alone (a linear model on global colour and border
statistics: AUC about 0.80). Cropping to the disc, squashing it onto one circle and subtracting the local
mean colour (Graham, Kaggle Diabetic Retinopathy Detection 2015: 4 * (image - blur) + 128) keep lesions
and vessels and take most of the camera away. Applied identically in training and serving
(app/contract/preprocessing.py).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

DESCRIPTION = (
    "fundus: crop to the square around the eye disc's bounding box (pixels brighter than 4% of the image's 99th "
    "percentile, rows and columns at least 2% covered; black beyond the frame) -> resize to a square of 4x the "
    "input side (at most 512) -> image - Gaussian blur (sigma = side / 60), each channel inside 90% of the "
    "inscribed circle standardised to mean 128 and standard deviation 32 -> outside that circle set to 128"
)
DISC_THRESHOLD = 0.04  # of the 99th percentile of luma: the background of both cameras is darker
COVERED = 0.02  # a row or column belongs to the disc when this share of it is brighter
WORK_SCALE, WORK_MAX = 4, 512  # normalise above the input size, where lesions are still a few pixels wide
SURROUND = 128  # outside the field of view: the mean of the normalised disc
SPREAD = 32.0  # standard deviation of each channel inside the disc, out of 255: vessels stay within range
MASK_RADIUS = 0.9  # the blur mixes the dark background into the rim: keep inside it (as Graham did)


def disc_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the eye disc; the whole image when nothing stands out."""
    luma = np.asarray(image.convert("L"), dtype=np.float32)
    bright = luma > DISC_THRESHOLD * max(float(np.percentile(luma, 99)), 1.0)
    rows = np.flatnonzero(bright.mean(axis=1) >= COVERED)
    columns = np.flatnonzero(bright.mean(axis=0) >= COVERED)
    if len(rows) < 2 or len(columns) < 2:
        return (0, 0, image.width, image.height)
    return square_around(int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)


def square_around(left: int, top: int, right: int, bottom: int) -> tuple[int, int, int, int]:
    """The square with the box's centre and its longer side: a camera's frame often cuts the disc's top and
    bottom off, and squashing that box would make the disc an ellipse (PIL's crop pads with black)."""
    side = max(right - left, bottom - top)
    centre_x, centre_y = (left + right) // 2, (top + bottom) // 2
    return (centre_x - side // 2, centre_y - side // 2, centre_x - side // 2 + side, centre_y - side // 2 + side)


DISC_DESCRIPTION = (
    "disc: crop to the square around the eye disc's bounding box (as fundus does), colours kept as photographed"
)


def crop_disc(image: Image.Image, side: int) -> Image.Image:
    """The eye disc alone, as a square (black beyond the frame), colours untouched: a camera's uncropped
    photograph becomes what the cropped training photographs are, without normalising colour away. Where the
    square reaches far beyond the frame, it comes at `side` px a side, not at full size (`_crop_scaled`)."""
    box = disc_box(image)
    left, top, right, bottom = box
    if (right - left) * (bottom - top) > FAR_BEYOND * image.width * image.height:
        return _crop_scaled(image, box, side)
    return image.crop(box)


# A disc square of more than twice the frame's pixels (an aspect past 2:1; camera frames are 4:3 to 16:9) is made
# at the size it is used at: at full size, a 20 x 32,792 px image (656 k pixels, a 410-byte JPEG) squared to
# 1.1 G pixels, Pillow's bomb check refused it and the request answered 500 (found by fuzzing); under the check
# (a 12,000 x 300 px image) it would have taken 430 MB for one request.
FAR_BEYOND = 2


def _crop_scaled(image: Image.Image, box: tuple[int, int, int, int], side: int) -> Image.Image:
    """image.crop(box).resize((side, side)), the part of the box inside the frame resized and placed on black."""
    left, top, right, bottom = box
    scale = side / max(right - left, bottom - top)
    inside = (max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height))
    size = (max(1, round((inside[2] - inside[0]) * scale)), max(1, round((inside[3] - inside[1]) * scale)))
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(
        image.crop(inside).resize(size, Image.Resampling.BILINEAR),
        (round((inside[0] - left) * scale), round((inside[1] - top) * scale)),
    )
    return canvas


def circle_mask(side: int) -> np.ndarray:
    centre = (side - 1) / 2
    y, x = np.ogrid[:side, :side]
    return (x - centre) ** 2 + (y - centre) ** 2 <= (MASK_RADIUS * side / 2) ** 2


def work_side(input_side: int) -> int:
    """The side at which the disc is normalised (and below which a JPEG must not be decoded)."""
    return min(WORK_SCALE * input_side, WORK_MAX)


def normalise_fundus(image: Image.Image, input_side: int) -> Image.Image:
    """An RGB or L fundus photograph -> the disc alone, square, colour-normalised, in the same mode."""
    side = work_side(input_side)
    disc = crop_disc(image, side).resize((side, side), Image.Resampling.BILINEAR)
    blurred = disc.filter(ImageFilter.GaussianBlur(radius=side / 60))
    detail = np.asarray(disc, dtype=np.float32) - np.asarray(blurred, dtype=np.float32)
    if detail.ndim == 2:
        detail = detail[..., None]
    inside = circle_mask(side)
    # Graham's fixed gain of 4 leaves each camera's contrast (and, by clipping, its tint) in the result;
    # one mean and spread per channel inside the disc takes them away (measured: see the confound check).
    mean = detail[inside].mean(axis=0)
    spread = np.maximum(detail[inside].std(axis=0), 1e-3)
    normalised = SURROUND + SPREAD * (detail - mean) / spread
    normalised[~inside] = SURROUND
    return Image.fromarray(np.clip(np.rint(normalised), 0, 255).astype(np.uint8).squeeze(), disc.mode)

"""Why a client's image cannot be used: the errors every decoder (Pillow's, DICOM's) raises."""

from __future__ import annotations


class ImageError(Exception):
    """A client's image cannot be used; subclasses say why."""


class UnsupportedImage(ImageError):
    """Not an image, or a format we do not read."""


class CorruptImage(ImageError):
    """An image whose header parses but whose data does not (truncated, damaged)."""


class ImageTooLarge(ImageError):
    """More pixels than the configured limit (a decompression-bomb guard)."""


class UnscorableImage(ImageError):
    """The model's answer for this image is not a number: nothing it could be calibrated or thresholded from."""

"""Image preprocessing: the one contract shared by training, evaluation and the service.

The paper's steps: image -> 3D array -> squash-resize to the model input -> 4D -> float32 / 255.
Everything that turns bytes into model input lives here so that a model never sees pixels
prepared differently from the ones it was trained on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from app.contract import contrast, fundus, modality
from app.contract.dicom import looks_like_dicom, read_dicom
from app.contract.image_errors import CorruptImage, ImageTooLarge, UnsupportedImage
from app.contract.png_rows import opened_missing_row_bytes

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF", "GIF"})
RESAMPLING = Image.Resampling.BILINEAR
DESCRIPTION = (
    "decode (first frame, EXIF orientation applied; DICOM: modality LUT, VOI LUT or window, MONOCHROME1 "
    "inverted, to 8 bits; alpha flattened onto black; 16-bit scaled "
    "to 8-bit; palette and CMYK converted) -> convert to the model's colour mode (RGB or "
    "ITU-R 601 luma) -> squash-resize to height x width (bilinear, aspect ratio not kept) -> "
    "float32 / 255 -> batch axis"
)


class Enhancement(StrEnum):
    """A modality's standard preparation after decoding, before the resize (none for most models)."""

    NONE = "none"
    FUNDUS = "fundus"  # app/contract/fundus.py
    DISC = "disc"  # app/contract/fundus.py: the eye disc cropped as a square, its colours kept
    CONTRAST = "contrast"  # app/contract/contrast.py: CLAHE, for X-rays and ultrasound


class ColourMode(StrEnum):
    RGB = "rgb"
    GRAYSCALE = "grayscale"

    @property
    def channels(self) -> int:
        return 3 if self is ColourMode.RGB else 1

    @property
    def pil_mode(self) -> str:
        return "RGB" if self is ColourMode.RGB else "L"


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: height x width x channels in one colour mode, prepared by one enhancement."""

    height: int
    width: int
    colour_mode: ColourMode
    enhancement: Enhancement = Enhancement.NONE

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.colour_mode.channels)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, H x W x C, already in the model's input size and colour mode
    width: int  # of the image as sent, after EXIF orientation
    height: int
    grayscale_source: bool = False  # the model takes colour, but the image had none
    colour_source: bool = False  # the model takes gray (X-ray, MRI, ultrasound), but the image is a colour picture
    kind_pixels: np.ndarray | None = None  # the image as the modality check reads it (modality.py), if asked


EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def read_header(data: bytes, *, max_pixels: int, content_type: str | None = None) -> Image.Image:
    """Open an image and check its format and pixel count from the header; no pixel is decoded yet.

    DICOM (by its 'DICM' marker, or sent as application/dicom) is read with pydicom and comes back
    already converted to an 8-bit image (app/contract/dicom.py)."""
    if looks_like_dicom(data, content_type):
        return read_dicom(data, max_pixels=max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - UnidentifiedImageError mostly; a damaged header in other types
        raise UnsupportedImage("the file is not an image in a supported format") from error
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            f"image format {image.format} is not supported; send one of "
            + ", ".join(sorted(SUPPORTED_FORMATS - {"MPO"}))
            + " or DICOM"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    return image


def load_first_frame(image: Image.Image, target: InputSpec | None = None, min_side: int = 0) -> Image.Image:
    """Decode the first frame of an image from `read_header`, EXIF orientation applied.

    With a target, JPEGs are decoded at a reduced scale (never below the target size, nor `min_side`) to save time.
    """
    try:
        image.seek(0)
        if target is not None and image.format in {"JPEG", "MPO"}:
            side = max(decoded_side(target), min_side)
            image.draft(image.mode, (side, side))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: a copy of a 50-megapixel image is 150 MB more
        return image
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow's decoders fail on damaged data in many types: one meaning
        # (OSError and EOFError for data cut short; TypeError for a TIFF strip offset stored as a fraction, ...)
        raise CorruptImage(f"the image data is truncated or corrupt ({error})") from error


def decoded_side(spec: InputSpec) -> int:
    """The smallest side a reduced JPEG decode may give: the input size, or what the enhancement works at."""
    side = max(spec.height, spec.width)
    if spec.enhancement in (Enhancement.FUNDUS, Enhancement.DISC):
        return fundus.work_side(side)
    return side


def to_colour_mode(image: Image.Image, colour_mode: ColourMode) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB or L, doing the right thing for the awkward ones."""
    if image.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        image = _high_bit_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        image = _flatten_alpha(image)
    return image.convert(colour_mode.pil_mode)


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255; scale the full range down instead.
    values = np.asarray(image).astype(np.float64)
    top = 65535.0 if values.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    # Medical images (cells, X-rays, fundus) sit on black; transparent pixels become black.
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def surround_value(spec: InputSpec) -> int:
    """The uint8 value around what matters in a prepared image: black for most (cells, X-rays, MRI sit on
    black), the normalised mean for fundus; what augmentation must fill with so as not to add borders."""
    return fundus.SURROUND if spec.enhancement is Enhancement.FUNDUS else 0


def describe(spec: InputSpec) -> str:
    """The preprocessing of `spec` in words, for the model card."""
    if spec.enhancement is Enhancement.FUNDUS:
        return DESCRIPTION.replace(" -> squash-resize", f" -> {fundus.DESCRIPTION} -> squash-resize")
    if spec.enhancement is Enhancement.DISC:
        return DESCRIPTION.replace(" -> squash-resize", f" -> {fundus.DISC_DESCRIPTION} -> squash-resize")
    if spec.enhancement is Enhancement.CONTRAST:
        return DESCRIPTION.replace(" -> float32", f" -> {contrast.DESCRIPTION} -> float32")
    return DESCRIPTION


def model_region(image: Image.Image, spec: InputSpec) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the part of a decoded image that the model sees, e.g. to place a heatmap."""
    if spec.enhancement in (Enhancement.FUNDUS, Enhancement.DISC):
        return fundus.disc_box(to_colour_mode(image, spec.colour_mode))
    return (0, 0, image.width, image.height)


def to_pixels(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The paper's squash-resize with the spec's enhancement (fundus before it, contrast after it): uint8
    array of exactly spec.shape."""
    converted = to_colour_mode(image, spec.colour_mode)
    if spec.enhancement is Enhancement.FUNDUS:
        converted = fundus.normalise_fundus(converted, max(spec.height, spec.width))
    elif spec.enhancement is Enhancement.DISC:
        converted = fundus.crop_disc(converted, max(spec.height, spec.width))
    if converted.size != (spec.width, spec.height):
        converted = converted.resize((spec.width, spec.height), RESAMPLING)
    if spec.enhancement is Enhancement.CONTRAST:
        converted = contrast.equalise(converted)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels.reshape(spec.shape)


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], for one image or a batch."""
    return pixels.astype(np.float32) / np.float32(255.0)


def decode(
    data: bytes, spec: InputSpec, *, max_pixels: int, content_type: str | None = None, for_kind: bool = False
) -> DecodedImage:
    """Bytes as sent by a client -> pixels in the model's input size, plus the original size."""
    header = read_header(data, max_pixels=max_pixels, content_type=content_type)
    return decode_opened(header, spec, for_kind=for_kind)


def size_as_sent(header: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as sent, after EXIF orientation, read before any reduced decoding."""
    width, height = header.size
    try:
        orientation = header.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - a damaged EXIF block, in whatever type: the decoder will say more
        orientation = None
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def decode_opened(header: Image.Image, spec: InputSpec, *, for_kind: bool = False) -> DecodedImage:
    """An image from `read_header` -> pixels in the model's input size, plus the size as sent; `for_kind`:
    also as the modality check reads it."""
    # First: reading the EXIF or the pixels lets Pillow go of the bytes this check reads.
    if rows_missing := opened_missing_row_bytes(header):
        raise CorruptImage(f"the PNG's image data ends {rows_missing:,} bytes before its last row")
    width, height = size_as_sent(header)
    image = load_first_frame(header, spec, min_side=modality.SIDE if for_kind else 0)
    return DecodedImage(
        kind_pixels=kind_input(image) if for_kind else None,
        pixels=to_pixels(image, spec),
        width=width,
        height=height,
        grayscale_source=spec.colour_mode is ColourMode.RGB and has_no_colour(image),
        colour_source=spec.colour_mode is ColourMode.GRAYSCALE and is_colour_picture(image),
    )


def kind_input(image: Image.Image) -> np.ndarray:
    """A decoded image as the modality check reads it: RGB (gray, 16-bit and alpha handled as for the models),
    fitted whole into its square (app/contract/modality.py)."""
    return modality.modality_pixels(to_colour_mode(image, ColourMode.RGB))


GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
GRAY_TOLERANCE = 6  # JPEG's chroma noise on a gray picture saved as RGB stays within a few levels


def has_no_colour(image: Image.Image) -> bool:
    """A gray image, or an RGB one whose channels are (nearly) equal everywhere: a colour model sees no stain."""
    if image.mode in GRAY_MODES:
        return True
    channels = small_rgb_channels(image)
    return int(np.abs(channels - channels.mean(axis=2, keepdims=True)).max()) <= GRAY_TOLERANCE


def small_rgb_channels(image: Image.Image) -> np.ndarray:
    """The image reduced to about 64 px, RGB, as int16: enough to judge its colour, cheap on any size."""
    return np.asarray(to_colour_mode(image, ColourMode.RGB).reduce(max(1, min(image.size) // 64)), dtype=np.int16)


# Mean chroma (max - min channel, 0-255) above which an image is a colour picture, not a gray modality: over
# a sample of 2,015 images of the brain MRI, chest X-ray and breast ultrasound sets (RGB exports and caliper
# marks included) at most 3.9; fundus photographs at least 37, the median blood-smear cell 37.
COLOUR_PICTURE_CHROMA = 16.0


def is_colour_picture(image: Image.Image) -> bool:
    """Colour throughout, as a photograph or a stained smear is: what no X-ray, MRI or B-mode ultrasound is."""
    if image.mode in GRAY_MODES:
        return False
    return mean_chroma(image) > COLOUR_PICTURE_CHROMA


def mean_chroma(image: Image.Image) -> float:
    channels = small_rgb_channels(image)
    return float((channels.max(axis=2) - channels.min(axis=2)).mean())


def file_pixels(path: str | Path, spec: InputSpec, *, max_pixels: int = 10**9) -> np.ndarray:
    """A file on disk -> uint8 pixels, the same way the service prepares an upload."""
    return decode(Path(path).read_bytes(), spec, max_pixels=max_pixels).pixels

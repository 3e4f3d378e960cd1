"""DICOM uploads -> an 8-bit Pillow image, the way a radiology viewer would display the first frame.

pydicom reads the file and, through the pylibjpeg plugins, decodes JPEG, JPEG-LS, JPEG 2000 and RLE
pixel data. Then: rescale slope/intercept (modality LUT), the VOI LUT or the first window
centre/width (linear, PS3.3 C.11.2.1.2) mapped onto 0-255, else the full range of the values;
MONOCHROME1 inverted; colour photometric interpretations (YBR, palette) converted to RGB.

Nothing from the dataset but pixels and pixel-module tags leaves this module: patient-identifying
tags are never logged or returned.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from app.contract.image_errors import ImageTooLarge, UnsupportedImage

DICOM_MEDIA_TYPES = frozenset({"application/dicom", "application/dicom+binary"})
PREAMBLE = 128


def looks_like_dicom(data: bytes, content_type: str | None = None) -> bool:
    """A Part 10 file ('DICM' after the preamble), or anything sent as application/dicom."""
    if data[PREAMBLE : PREAMBLE + 4] == b"DICM":
        return True
    return (content_type or "").split(";")[0].strip().lower() in DICOM_MEDIA_TYPES


# VRs whose length takes 4 bytes after 2 reserved ones in explicit VR (PS3.5 7.1.2); the others take 2.
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
UNDEFINED_LENGTH = 0xFFFFFFFF


def file_meta_nests(data: bytes) -> bool:
    """Whether the file meta group (0002) holds a sequence or an element of undefined length, which PS3.10's never
    does. pydicom formats such a group into an error message that grows exponentially with its nesting (eagerly,
    for a log line): a 2.5 kB file took over 4 GB (found by fuzzing)."""
    position = PREAMBLE + 4 if data[PREAMBLE : PREAMBLE + 4] == b"DICM" else 0
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        vr = data[position + 4 : position + 6]
        if not (vr.isalpha() and vr.isupper()):
            return False  # implicit VR: pydicom takes the group's VRs from its dictionary, which has no sequence
        if vr == b"SQ":
            return True
        if vr in LONG_LENGTH_VRS:
            header, length = 12, int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            header, length = 8, int.from_bytes(data[position + 6 : position + 8], "little")
        if length == UNDEFINED_LENGTH:
            return True
        position += header + length
    return False


def parse_dicom(data: bytes, *, stop_before_pixels: bool = False, force: bool = True) -> Any:
    """pydicom's dcmread of the bytes, after refusing what would make it take gigabytes (`file_meta_nests`)."""
    import pydicom

    if file_meta_nests(data):
        raise UnsupportedImage("the DICOM file's meta information (group 0002) holds a sequence: not a valid file")
    return pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=stop_before_pixels)


def dicom_decoded_bytes(data: bytes, max_pixels: int) -> int:
    """Estimated peak bytes of decoding a DICOM file's first frame, from its header alone: the stored frame,
    and two float32 working copies per sample. 0 where the header cannot say (decoding then reports why)."""
    try:
        dataset = parse_dicom(data, stop_before_pixels=True)
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        stored = max(1, int(dataset.get("BitsAllocated", 8) or 8) // 8)
    except Exception:  # noqa: BLE001 - an unreadable header: read_dicom says what is wrong
        return 0
    if rows * columns > max_pixels:
        return 0  # refused by its pixel count before any decoding
    return rows * columns * samples * (stored + 2 * 4)


def read_dicom(data: bytes, *, max_pixels: int) -> Image.Image:
    """Bytes of a DICOM file -> its first frame as an 8-bit L or RGB image."""
    # pydicom parses elements when they are first read, so reading Rows can fail as parsing the file can: on
    # garbage, in many types (struct.error for a file cut short, NotImplementedError for an unknown VR, ...).
    try:
        dataset = parse_dicom(data)
        has_pixels = any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    except (MemoryError, UnsupportedImage):
        raise
    except Exception as error:  # noqa: BLE001 - many types, one meaning
        raise UnsupportedImage(f"the file is not a readable DICOM dataset ({error_kind(error)})") from None
    if not has_pixels:
        raise UnsupportedImage("the DICOM file has no pixel data (it is not an image, e.g. a report or a plan)")
    if rows < 1 or columns < 1:
        raise UnsupportedImage("the DICOM file's image has no rows or columns")
    if rows * columns > max_pixels:
        raise ImageTooLarge(
            f"the DICOM image has {columns}x{rows} = {rows * columns:,} pixels; the limit is {max_pixels:,}"
        )
    try:  # the frame is handed on, not kept here: `_eight_bit_image` frees it once it has the values
        return _eight_bit_image(_first_frame(dataset), dataset)
    except (UnsupportedImage, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - a missing or malformed palette, LUT or window: many types, one meaning
        raise UnsupportedImage(
            f"the DICOM image's display attributes (palette, LUT or window) cannot be applied: {_first_line(error)}"
        ) from None


def _first_frame(dataset: Any) -> np.ndarray:
    """The first frame's stored values; only that frame is decoded."""
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(dataset, index=0)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for one meaning: can't decode
        syntax = _transfer_syntax(dataset)
        raise UnsupportedImage(
            f"the DICOM pixel data ({syntax}) cannot be decoded here: {_first_line(error)}"
        ) from None


def _eight_bit_image(frame: np.ndarray, dataset: Any) -> Image.Image:
    """A decoded frame as an 8-bit L or RGB image, by the dataset's palette, LUTs, window and photometric."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return Image.fromarray(_to_uint8_full_range(apply_color_lut(frame, dataset)), "RGB")
    if frame.ndim == 3:  # RGB (pydicom has already converted YBR to RGB)
        return Image.fromarray(_to_uint8_full_range(frame, bits=int(dataset.get("BitsStored", 8))), "RGB")
    # float32, not float64: half the memory of a large frame, and 8-bit output needs no more precision.
    if "VOILUTSequence" in dataset:
        lut_bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        grey = apply_voi_lut(frame, dataset, index=0).astype(np.float32, copy=False)
        grey = np.clip(grey * np.float32(255 / (2**lut_bits - 1)), 0, 255)
    else:
        values = apply_modality_lut(frame, dataset).astype(np.float32, copy=False)
        del frame  # a large frame's copies add up under load
        if "WindowCenter" in dataset and "WindowWidth" in dataset:
            grey = _window(values, _first(dataset.WindowCenter), _first(dataset.WindowWidth))
        else:
            grey = _stretch(values)
    if photometric == "MONOCHROME1":  # low values are white
        np.subtract(255.0, grey, out=grey)
    return Image.fromarray(np.rint(grey).astype(np.uint8), "L")


def _window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's linear VOI function onto 0-255."""
    width = max(width, 1.0)
    scale = np.float32(255.0 / (width - 1 if width > 1 else 1))
    scaled = (values - np.float32(centre - 0.5)) * scale + np.float32(127.5)
    return np.clip(scaled, 0.0, 255.0, out=scaled)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - np.float32(low)) * np.float32(255.0 / (high - low))


def _to_uint8_full_range(values: np.ndarray, bits: int | None = None) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    top = float(2**bits - 1) if bits and bits > 8 else float(max(values.max(), 1))
    return np.clip(np.rint(values.astype(np.float32) * np.float32(255.0 / top)), 0, 255).astype(np.uint8)


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _transfer_syntax(dataset: object) -> str:
    meta = getattr(dataset, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None)
    if uid is None:
        return "unknown transfer syntax"
    return f"transfer syntax {uid.name} ({uid})"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def error_kind(error: Exception) -> str:
    """The failure's type, named so that a client can tell it ("struct.error", not "error"); never its message,
    which may quote an attribute's value."""
    kind = type(error)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"

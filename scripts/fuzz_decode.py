"""Fuzz the service's decode path with atheris (coverage-guided, libFuzzer): any exception but the domain's image
errors would answer 500. Not part of the tests: run it by hand, for as long as you like.

    .venv/bin/pip install atheris
    .venv/bin/python scripts/fuzz_decode.py /tmp/fuzz-corpus -max_total_time=1800 -artifact_prefix=/tmp/fuzz-

The corpus folder is filled with small synthetic images of every format the service takes on first use (never
images of the data sets). A crash leaves its input as <artifact_prefix>crash-<hash>; replay it with
`scripts/fuzz_decode.py <that file>`. What its runs found is in docs/api.md."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Not the fundus crop: atheris' tracing of its numpy comparisons held ~45 kB a call, so a run's memory grew by
# ~1 GB in 15 min until libFuzzer stopped it as out of memory (replayed without atheris: flat). It is array
# arithmetic with few branches to cover.
with atheris.instrument_imports(include=["PIL", "pydicom", "app"], exclude=["app.contract.fundus"]):
    import PIL.Image
    import pydicom.filereader  # noqa: F401 - read lazily by app.contract.dicom: imported here to be instrumented

    from app.contract.dicom import dicom_decoded_bytes, looks_like_dicom
    from app.contract.image_errors import ImageError
    from app.contract.preprocessing import (
        ColourMode,
        Enhancement,
        InputSpec,
        decode,
        load_first_frame,
        model_region,
        read_header,
    )

    PIL.Image.init()  # the format plugins, else imported on the first open (uninstrumented)

SPECS = [
    InputSpec(64, 64, ColourMode.GRAYSCALE),
    InputSpec(48, 48, ColourMode.RGB, Enhancement.DISC),
    InputSpec(32, 32, ColourMode.GRAYSCALE, Enhancement.CONTRAST),
]
CONTENT_TYPES = [None, "image/png", "application/dicom"]
MAX_PIXELS = 4_000_000


def decode_as_served(data: bytes, spec: InputSpec, content_type: str | None) -> None:
    """What the service does with an upload (app/runtime/inference.py), in one thread."""
    if looks_like_dicom(data, content_type):
        dicom_decoded_bytes(data, MAX_PIXELS)
    decode(data, spec, max_pixels=MAX_PIXELS, content_type=content_type, for_kind=True)
    # the explanation decodes the file again at full scale, and places the heatmap on it
    image = load_first_frame(read_header(data, max_pixels=MAX_PIXELS, content_type=content_type))
    model_region(image, spec)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    spec, content_type = SPECS[data[0] % len(SPECS)], CONTENT_TYPES[data[1] % len(CONTENT_TYPES)]
    try:
        decode_as_served(data[2:], spec, content_type)
    except ImageError:
        pass


def seed_corpus(folder: Path) -> None:
    """Small synthetic images of each format, each behind the two bytes that choose the spec and content type."""
    import io

    import numpy as np

    from tests.dicom_instances import encoded, instance

    rng = np.random.default_rng(0)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), "RGB")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotated
    images = {
        "png": (rgb, "PNG", {}),
        "interlaced.png": (rgb, "PNG", {"interlace": 1}),
        "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "palette.png": (rgb.convert("P"), "PNG", {}),
        "16bit.png": (PIL.Image.fromarray(rng.integers(0, 65535, (16, 16)).astype(np.uint16)), "PNG", {}),
        "jpg": (rgb, "JPEG", {"exif": exif.tobytes()}),
        "progressive.jpg": (rgb, "JPEG", {"progressive": True}),
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
        "bmp": (rgb, "BMP", {}),
        "lzw.tif": (rgb, "TIFF", {"compression": "tiff_lzw"}),
        "float.tif": (PIL.Image.fromarray(rng.random((8, 8)).astype(np.float32)), "TIFF", {}),
        "gif": (rgb.convert("P"), "GIF", {"save_all": True, "append_images": [rgb.convert("L").convert("P")]}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (image, fmt, options) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        (folder / name).write_bytes(b"\0\0" + buffer.getvalue())
    (folder / "dcm").write_bytes(b"\0\2" + encoded(instance(side=16)))


if __name__ == "__main__":
    from fuzzing import fuzz  # scripts/fuzzing.py: this folder is on the path of a script run from it

    fuzz(one_input, seed_corpus)

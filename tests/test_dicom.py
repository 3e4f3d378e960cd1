"""DICOM uploads, read with pydicom, on the files pydicom itself ships (compressed ones included)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.contract.dicom import PREAMBLE, dicom_decoded_bytes, file_meta_nests, looks_like_dicom, read_dicom
from app.contract.image_errors import ImageTooLarge, UnsupportedImage
from tests.dicom_instances import encoded, instance

LIMIT = 10**8


def shipped(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def as_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "mode", "size"),
    [
        ("CT_small.dcm", "L", (128, 128)),  # rescale slope/intercept and a window
        ("MR_small.dcm", "L", (64, 64)),  # 16-bit, no window: full range
        ("MR_small_RLE.dcm", "L", (64, 64)),  # RLE lossless
        ("MR_small_jp2klossless.dcm", "L", (64, 64)),  # JPEG 2000
        ("MR_small_jpeg_ls_lossless.dcm", "L", (64, 64)),  # JPEG-LS
        ("JPEG2000.dcm", "L", (256, 1024)),
        ("JPGExtended.dcm", "L", (256, 1024)),  # JPEG extended, 12-bit
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB", (100, 100)),  # JPEG baseline, YBR -> RGB
        ("SC_rgb_rle_2frame.dcm", "RGB", (100, 100)),  # multi-frame: the first
        ("examples_palette.dcm", "RGB", (800, 350)),  # PALETTE COLOR
        ("SC_ybr_full_422_uncompressed.dcm", "RGB", (100, 100)),
    ],
)
def test_pydicom_sample_files_become_8_bit_images(name: str, mode: str, size: tuple[int, int]) -> None:
    data = shipped(name)
    assert looks_like_dicom(data)
    image = read_dicom(data, max_pixels=LIMIT)
    assert image.mode == mode and image.size == size
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.max() > pixels.min()  # not flat: the values were scaled, not clipped


def test_the_window_maps_centre_and_width_onto_0_to_255() -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    dataset.WindowCenter, dataset.WindowWidth = float(np.median(hu)), 200.0
    grey = np.asarray(read_dicom(as_bytes(dataset), max_pixels=LIMIT)).astype(int)
    below, above = hu < np.median(hu) - 110, hu > np.median(hu) + 110
    assert (grey[below] == 0).all() and (grey[above] == 255).all()


def test_monochrome1_is_inverted() -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    normal = np.asarray(read_dicom(as_bytes(dataset), max_pixels=LIMIT)).astype(int)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted = np.asarray(read_dicom(as_bytes(dataset), max_pixels=LIMIT)).astype(int)
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_a_dicom_without_pixel_data_is_refused_saying_so() -> None:
    with pytest.raises(UnsupportedImage, match="no pixel data"):
        read_dicom(shipped("rtplan.dcm"), max_pixels=LIMIT)


def test_an_undecodable_transfer_syntax_is_refused_naming_it() -> None:
    rle = b"1.2.840.10008.1.2.5\x00"
    data = shipped("MR_small_RLE.dcm")
    assert rle in data
    unknown = data.replace(rle, b"1.2.840.10008.1.2.9\x00")  # a syntax no decoder knows, same length
    with pytest.raises(UnsupportedImage, match=r"cannot be decoded.*1\.2\.840\.10008\.1\.2\.9"):
        read_dicom(unknown, max_pixels=LIMIT)


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="256x1024"):
        read_dicom(shipped("JPEG2000.dcm"), max_pixels=1000)


def test_content_type_alone_marks_dicom_without_a_preamble() -> None:
    data = shipped("no_meta.dcm")
    assert not looks_like_dicom(data)
    assert looks_like_dicom(data, "application/dicom")


@pytest.mark.parametrize(
    "data",
    [
        b"@" + b"\xff" * 8,  # found by fuzzing the decode path: pydicom's parser raised struct.error, a 500
    ],
)
def test_bytes_pydicom_cannot_parse_are_refused_as_not_dicom(data: bytes) -> None:
    with pytest.raises(UnsupportedImage, match=r"not a readable DICOM dataset \(struct\.error\)"):
        read_dicom(data, max_pixels=LIMIT)


def test_an_element_pydicom_cannot_read_is_refused_as_not_dicom() -> None:
    # Found by fuzzing: Columns with the unknown VR "KS" raised NotImplementedError when read, a 500.
    data = encoded(instance(side=16))
    columns = b"\x28\x00\x11\x00US"  # (0028,0011), explicit VR little endian
    assert data.count(columns) == 1
    with pytest.raises(UnsupportedImage, match="not a readable DICOM dataset"):
        read_dicom(data.replace(columns, b"\x28\x00\x11\x00KS"), max_pixels=LIMIT)


def _without_palette(dataset: pydicom.Dataset) -> None:
    dataset.PhotometricInterpretation = "PALETTE COLOR"  # and no palette to look colours up in


def _voi_lut_without_descriptor(dataset: pydicom.Dataset) -> None:
    item = pydicom.Dataset()
    item.add_new((0x0028, 0x3006), "US", [0, 1, 2])  # LUTData, with no LUTDescriptor to read it by
    dataset.VOILUTSequence = [item]


def _window_in_words(dataset: pydicom.Dataset) -> None:
    dataset.add_new((0x0028, 0x1050), "LO", "brain")  # WindowCenter, not a number
    dataset.add_new((0x0028, 0x1051), "LO", "wide")


@pytest.mark.parametrize("spoil", [_without_palette, _voi_lut_without_descriptor, _window_in_words])
def test_display_attributes_that_cannot_be_applied_are_refused_saying_so(spoil) -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    spoil(dataset)
    with pytest.raises(UnsupportedImage, match="display attributes"):
        read_dicom(as_bytes(dataset), max_pixels=LIMIT)


GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes: the file meta group's first element


@pytest.mark.parametrize(
    "nested", [b"\x02\x00\x00\x00SQ\x00\x00\xff\xff\xff\xff", b"\x02\x00\x00\x00OB\x00\x00\xff\xff\xff\xff"]
)
def test_a_file_meta_group_that_nests_is_refused_before_pydicom_reads_it(monkeypatch, nested: bytes) -> None:
    # Found by fuzzing: pydicom formats such a group into an error message that grows exponentially with the
    # nesting, and a 2.5 kB file took over 4 GB. PS3.10's group 0002 holds no sequence and no undefined length.
    data = encoded(instance(side=16))
    assert data.count(GROUP_LENGTH) == 1
    monkeypatch.setattr(pydicom, "dcmread", lambda *args, **kwargs: pytest.fail("pydicom was asked to read it"))
    with pytest.raises(UnsupportedImage, match="meta information"):
        read_dicom(data.replace(GROUP_LENGTH, nested), max_pixels=LIMIT)
    assert dicom_decoded_bytes(data.replace(GROUP_LENGTH, nested), LIMIT) == 0


def test_an_ordinary_file_meta_group_is_read_as_before() -> None:
    data = encoded(instance(side=16))
    assert not file_meta_nests(data)
    assert not file_meta_nests(data[PREAMBLE + 4 :])  # without its preamble, as sent with Content-Type alone
    assert read_dicom(data, max_pixels=LIMIT).size == (16, 16)

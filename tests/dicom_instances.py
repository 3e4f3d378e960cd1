"""Synthetic DICOM instances for the PACS tests: images of the kinds MedScan routes, and objects it must refuse."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def instance(
    modality: str = "DX",
    body_part: str = "CHEST",
    *,
    study: str | None = None,
    side: int = 64,
    seed: int = 0,
    pixels: bool = True,
    series_description: str = "",
) -> Dataset:
    rng = np.random.default_rng(seed)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = (DIGITAL_XRAY if modality == "DX" else SECONDARY_CAPTURE) if pixels else BASIC_TEXT_SR
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality, dataset.BodyPartExamined, dataset.SeriesDescription = modality, body_part, series_description
    dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate, dataset.PatientSex = (
        "MS-1",
        "Test^Patient",
        "",
        "O",
    )
    dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber = "20261203", "120000", "ACC1"
    dataset.ReferringPhysicianName, dataset.StudyID, dataset.SeriesNumber, dataset.InstanceNumber = "", "1", 1, 1
    if pixels:
        dataset.Rows = dataset.Columns = side
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
        dataset.PixelData = rng.integers(0, 256, (side, side), dtype=np.uint8).tobytes()
    return dataset


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart_related(parts: list[tuple[bytes, str]], boundary: str = "medscan-boundary") -> tuple[bytes, str]:
    """A STOW-RS body: each (bytes, content type) a part."""
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
            for data, content_type in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'

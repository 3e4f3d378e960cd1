"""A MedScan answer as a DICOM Comprehensive SR (highdicom): the finding, its calibrated probability, label and
threshold, the model's name and version, the wrong-kind and site warnings and the intended use, referencing the
image it is about, in that image's study and a series of MedScan's own. Its UIDs are derived from the source
instance and the model version, so an SR sent twice is the same object, stored once."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from app.runtime.inference import Screening

SCHEME = "99MEDSCAN"  # a private coding scheme (PS3.16: designators beginning with 99)
TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
FINDING = Code("121071", "DCM", "Finding")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
SOURCE = Code("121112", "DCM", "Source of Measurement")
PROBABILITY = Code("PROBABILITY", SCHEME, "Calibrated probability of the positive class")
THRESHOLD = Code("THRESHOLD", SCHEME, "Screening threshold")
WARNING = Code("WARNING", SCHEME, "Warning")
INTENDED_USE = Code("INTENDED-USE", SCHEME, "Intended use")
NO_UNITS = Code("1", "UCUM", "no units")
SERIES_NUMBER = 9901  # MedScan's results series in each study


def label_code(disease: str, label: str) -> Code:
    return Code(f"{disease}:{label}".upper()[:16], SCHEME, f"{disease}: {label}")


def uid_for(*parts: object) -> str:
    """A UID that is always the same for the same parts (pydicom hashes them under its root)."""
    return str(generate_uid(entropy_srcs=[str(part) for part in parts]))


def overlay_capture(source: Dataset, screening: Screening) -> Dataset:
    """The Grad-CAM overlay of an explained answer as a Secondary Capture, in the SR's series."""
    assert screening.explanation is not None
    with Image.open(io.BytesIO(screening.explanation.overlay_png)) as png:
        pixels = np.asarray(png.convert("RGB"))
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uid_for(source.StudyInstanceUID, "medscan-results"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=uid_for(source.SOPInstanceUID, screening.disease, screening.model_version, "overlay"),
        instance_number=2,
        manufacturer="MedScan",
        patient_orientation=("L", "F"),
        series_description="MedScan screening results (research use only)",
    )


def structured_report(source: Dataset, screening: Screening) -> Dataset:
    """The SR of one answer about `source` (a dataset with at least its header)."""
    items = [
        hd.sr.CodeContentItem(FINDING, label_code(screening.disease, screening.label), relationship_type="CONTAINS"),
        hd.sr.NumContentItem(PROBABILITY, round(screening.score, 6), NO_UNITS, relationship_type="CONTAINS"),
        hd.sr.NumContentItem(THRESHOLD, round(screening.threshold, 6), NO_UNITS, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(ALGORITHM_NAME, f"MedScan {screening.disease}", relationship_type="CONTAINS"),
        hd.sr.TextContentItem(ALGORITHM_VERSION, str(screening.model_version), relationship_type="CONTAINS"),
        hd.sr.TextContentItem(INTENDED_USE, screening.intended_use[:1024], relationship_type="CONTAINS"),
        hd.sr.ImageContentItem(SOURCE, source.SOPClassUID, source.SOPInstanceUID, relationship_type="CONTAINS"),
    ]
    if screening.warning:
        items.append(hd.sr.TextContentItem(WARNING, screening.warning[:1024], relationship_type="CONTAINS"))
    root = hd.sr.ContainerContentItem(TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=uid_for(source.StudyInstanceUID, "medscan-results"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=uid_for(source.SOPInstanceUID, screening.disease, screening.model_version),
        instance_number=1,
        manufacturer="MedScan",
        series_description="MedScan screening results (research use only)",
        is_complete=True,
    )

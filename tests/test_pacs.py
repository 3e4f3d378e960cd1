"""The PACS room without a PACS: routing by attributes, the SR's content read back with highdicom, and the outbox's
durability, backoff and idempotence."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from app.contract.modality import Modality
from app.pacs.outbox import Outbox
from app.pacs.report import structured_report
from app.pacs.routing import DEFAULT_ROUTES, Route, route
from app.pacs.senders import parse_destination
from app.runtime.inference import Screening
from tests.dicom_instances import instance

KINDS = {
    "pneumonia": Modality.CHEST_XRAY, "brain_tumor": Modality.BRAIN_MRI, "breast_cancer": Modality.BREAST_ULTRASOUND,
    "retinopathy": Modality.FUNDUS_PHOTOGRAPH, "referable_retinopathy": Modality.FUNDUS_PHOTOGRAPH,
    "malaria": Modality.BLOOD_SMEAR_CELL, "tuberculosis": Modality.CHEST_XRAY,
}  # fmt: skip


@pytest.mark.parametrize(
    ("modality", "body_part", "description", "expected"),
    [
        ("DX", "CHEST", "", ["pneumonia", "tuberculosis"]),  # every model of the kind, a lab's own included
        ("CR", "", "", ["pneumonia", "tuberculosis"]),
        ("MR", "BRAIN", "T1 axial", ["brain_tumor"]),
        ("US", "BREAST", "", ["breast_cancer"]),
        ("OP", "EYE", "Fundus OD", ["referable_retinopathy", "retinopathy"]),
        ("XC", "", "thin blood smear", ["malaria"]),
        ("MR", "KNEE", "", []),
        ("CT", "CHEST", "", []),
    ],
)
def test_instances_go_to_the_models_of_their_kind(modality, body_part, description, expected) -> None:
    dataset = instance(modality, body_part, series_description=description)
    assert route(dataset, DEFAULT_ROUTES, KINDS) == expected


def test_a_rule_may_name_its_models() -> None:
    rules = [Route(modality=["CT"], diseases=["pneumonia", "not_served"]), *DEFAULT_ROUTES]
    assert route(instance("CT", "CHEST"), rules, KINDS) == ["pneumonia"]


def screening(label: str = "infected") -> Screening:
    """An answer whose image lies far beyond the model's training images (distance 9 > 2): it carries a warning."""
    return Screening("pneumonia", 3, label, 0.875, {"infected": 0.875, "uninfected": 0.125}, 0.4, False, 9.0, 2.0,
                     (64, 64), None, "research use only; not for diagnosis", 99.0, False, False, None)  # fmt: skip


def test_the_sr_says_the_finding_probability_model_and_warning_about_its_source() -> None:
    source = instance("DX", "CHEST", seed=3)
    report = structured_report(source, screening())
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    read = hd.sr.ComprehensiveSR.from_dataset(dcmread(io.BytesIO(buffer.getvalue())))
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in read.ContentSequence}
    assert items["Finding"].ConceptCodeSequence[0].CodeMeaning == "pneumonia: infected"
    assert float(items["Calibrated probability of the positive class"].MeasuredValueSequence[0].NumericValue) == 0.875
    assert float(items["Screening threshold"].MeasuredValueSequence[0].NumericValue) == 0.4
    assert items["Algorithm Name"].TextValue == "MedScan pneumonia" and items["Algorithm Version"].TextValue == "3"
    assert items["Warning"].TextValue == screening().warning and "do not trust its label" in items["Warning"].TextValue
    assert items["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (read.StudyInstanceUID, read.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert read.SeriesInstanceUID != source.SeriesInstanceUID
    again = structured_report(source, screening())
    assert again.SOPInstanceUID == report.SOPInstanceUID  # the same answer is the same object


def test_the_outbox_keeps_what_fails_retries_with_backoff_and_sends_each_once(tmp_path: Path, monkeypatch) -> None:
    from app.pacs import outbox as module

    clock = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    delivered, down = [], [True]

    def send(dataset) -> None:
        if down[0]:
            raise ConnectionError("PACS down")
        delivered.append(dataset.SOPInstanceUID)

    box = Outbox(tmp_path / "outbox", send)
    report = structured_report(instance(seed=4), screening())
    box.put(report)
    box.put(report)  # queued twice: one file
    assert box.pending == 1 and not list((tmp_path / "outbox").glob(".*partial"))
    assert box.deliver_due() == 0 and box.failures == 1
    clock[0] += 0.5
    assert box.deliver_due() == 0 and box.failures == 1  # not due yet: waits 1 s
    clock[0] += 1.0
    box.deliver_due()
    assert box.failures == 2  # then 2 s
    down[0] = False
    clock[0] += 1.0
    assert box.deliver_due() == 0  # still waiting out its backoff
    clock[0] += 1.5
    assert box.deliver_due() == 1 and delivered == [report.SOPInstanceUID] and box.pending == 0
    assert box.counts() == (0, 1, 2)


def test_a_c_store_destination_is_parsed_or_refused() -> None:
    assert parse_destination("ORTHANC@pacs.local:4242") == ("ORTHANC", "pacs.local", 4242)
    with pytest.raises(ValueError, match="AE_TITLE@host:port"):
        parse_destination("pacs.local:4242")

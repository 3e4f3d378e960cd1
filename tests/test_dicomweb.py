"""STOW-RS in: instances routed by their attributes, answered like /predict, each failure with its DICOM reason,
and an SR of each answer waiting in the outbox for the PACS."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.dicom_instances import encoded, instance, multipart_related

REFERENCED, FAILED, REASON = "00081199", "00081198", "00081197"


@pytest.fixture(scope="module")
def pacs_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chest X-ray model (by its card's kind) and a blood-smear one."""
    from tests.model_fixtures import export_untrained

    models = tmp_path_factory.mktemp("pacs-models")
    export_untrained(models, "pneumonia", size=48, modality="chest_xray")
    export_untrained(models, "malaria", size=50, modality="blood_smear_cell")
    return models


@pytest.fixture(scope="module")
def stow(pacs_models: Path, tmp_path_factory: pytest.TempPathFactory):
    from app.main import create_app
    from app.settings import Settings

    outbox = tmp_path_factory.mktemp("outbox")
    settings = Settings(
        models_dir=pacs_models,
        modality_check=False,
        results_dicomweb_url="http://127.0.0.1:9/dicom-web",  # nobody listens: every SR stays in the outbox
        results_outbox_dir=outbox,
        results_poll_s=30,
    )
    with TestClient(create_app(settings)) as client:
        yield client, outbox


def post(client: TestClient, parts: list[tuple[bytes, str]], path: str = "/dicomweb/studies", **headers):
    body, content_type = multipart_related(parts)
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers})


def test_an_instance_is_routed_by_its_attributes_answered_and_its_sr_queued(stow) -> None:
    client, outbox = stow
    chest = instance("DX", "CHEST", seed=1)
    response = post(client, [(encoded(chest), "application/dicom")], Accept="application/json")
    assert response.status_code == 200, response.text
    body = response.json()
    (referenced,) = body["dicom"][REFERENCED]["Value"]
    assert referenced["00081155"]["Value"] == [chest.SOPInstanceUID] and FAILED not in body["dicom"]
    (answered,) = body["answers"]
    assert set(answered["answers"]) == {"pneumonia"}  # DX chest -> the chest X-ray model, by its card
    predicted = client.post(
        "/predict/pneumonia", content=encoded(chest), headers={"Content-Type": "application/dicom"}
    ).json()
    assert answered["answers"]["pneumonia"]["score"] == predicted["score"]
    (report,) = answered["reports"]
    assert (outbox / f"{report}.dcm").is_file()  # durable until the PACS takes it


def test_each_bad_part_fails_alone_with_its_reason(stow) -> None:
    client, _ = stow
    good, knee = instance("DX", "CHEST", seed=2), instance("MR", "KNEE", seed=3)
    report_only = instance("DX", "CHEST", pixels=False)
    parts = [
        (encoded(good), "application/dicom"),
        (b"not dicom at all", "application/dicom"),
        (encoded(knee), "application/dicom"),
        (encoded(report_only), "application/dicom"),
        (b"{}", "application/json"),
    ]
    response = post(client, parts, Accept="application/json")
    assert response.status_code == 202  # some answered, some not
    failed = response.json()["dicom"][FAILED]["Value"]
    assert [item[REASON]["Value"][0] for item in failed] == [0xC000, 0x0122, 0xA900, 0xC000]
    reasons = [a["failure"] for a in response.json()["answers"] if a["failure"]]
    assert "not a readable DICOM" in reasons[0] and "Modality MR, BodyPartExamined KNEE" in reasons[1]
    assert "no pixel data" in reasons[2] and "application/json" in reasons[3]


@pytest.mark.parametrize("tag", [b"\x08\x00\x60\x00CS", b"\x20\x00\x0d\x00UI", b"\x10\x00\x10\x00PN"])
def test_an_element_pydicom_cannot_read_fails_that_instance_alone(stow, tag: bytes) -> None:
    # pydicom parses an element when it is first read: an unknown VR in Modality (routing), StudyInstanceUID
    # (the study check) or PatientName (the SR) raised after the header was read, and the request answered 500.
    client, _ = stow
    spoiled = encoded(instance("DX", "CHEST", seed=6))
    assert spoiled.count(tag) == 1
    spoiled = spoiled.replace(tag, tag[:4] + b"KS")
    good = encoded(instance("DX", "CHEST", seed=7))
    response = post(client, [(spoiled, "application/dicom"), (good, "application/dicom")], Accept="application/json")
    assert response.status_code == 202, response.text  # the good one answered, the spoiled one failed alone
    (failed,) = response.json()["dicom"][FAILED]["Value"]
    assert failed[REASON]["Value"] == [0xC000]
    assert "not a readable DICOM" in response.json()["answers"][0]["failure"]


def test_a_named_model_a_study_url_and_wrong_bodies(stow) -> None:
    client, outbox = stow
    smear = instance("XC", "", seed=4)
    named = post(client, [(encoded(smear), "application/dicom")], "/dicomweb/studies?disease=malaria")
    assert named.status_code == 200 and named.headers["content-type"] == "application/dicom+json"
    queued = len(list(outbox.glob("*.dcm")))
    other_study = post(client, [(encoded(instance(seed=5)), "application/dicom")], "/dicomweb/studies/1.2.3")
    assert other_study.status_code == 409 and other_study.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA900]
    assert len(list(outbox.glob("*.dcm"))) == queued  # refused before it was answered: no SR for it
    none = post(client, [(encoded(smear), "application/dicom")], "/dicomweb/studies?disease=cholera")
    assert none.status_code == 409
    wrong = client.post("/dicomweb/studies", content=encoded(smear), headers={"Content-Type": "application/dicom"})
    assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"


def test_with_overlays_each_answer_also_queues_its_grad_cam_as_a_secondary_capture(pacs_models, tmp_path) -> None:
    from pydicom import dcmread

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(models_dir=pacs_models, modality_check=False, results_dicomweb_url="http://127.0.0.1:9/",
                        results_outbox_dir=tmp_path, results_poll_s=30, results_overlays=True)  # fmt: skip
    chest = instance("DX", "CHEST", seed=6)
    with TestClient(create_app(settings)) as client:
        response = post(client, [(encoded(chest), "application/dicom")], Accept="application/json")
    (answered,) = response.json()["answers"]
    report, overlay = (dcmread(tmp_path / f"{uid}.dcm") for uid in answered["reports"])
    assert report.Modality == "SR" and overlay.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert overlay.SeriesInstanceUID == report.SeriesInstanceUID and overlay.StudyInstanceUID == chest.StudyInstanceUID
    assert overlay.SamplesPerPixel == 3 and overlay.Rows > 0

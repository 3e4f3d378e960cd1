"""A real PACS (Debian's Orthanc with its DICOMweb plugin) talking to MedScan: Orthanc sends a study by STOW-RS
and by C-STORE, MedScan answers and sends its SR back, and the SR is found in Orthanc by QIDO-RS and read with
highdicom; with Orthanc stopped mid-way, every SR still arrives, once, after it restarts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dicom_instances import encoded, instance, multipart_related
from tests.live_server import free_port, live_server

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REQUIRE = os.environ.get("MEDSCAN_REQUIRE_ORTHANC") == "1"
pytestmark = pytest.mark.slow


class Orthanc:
    """An Orthanc process on free ports, with its storage in `folder` (kept across a restart)."""

    def __init__(self, folder: Path, medscan_url: str, scp_port: int) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "MedScanTest", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {"medscan": [f"{medscan_url}/dicomweb/"]}},
            "DicomModalities": {"medscan": ["MEDSCAN", "127.0.0.1", scp_port]},
        }  # fmt: skip
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([str(ORTHANC), str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start: {(self.folder / 'orthanc.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def upload(self, data: bytes) -> dict:
        response = httpx.post(f"{self.url}/instances", content=data, timeout=30)
        response.raise_for_status()
        return response.json()

    def sr_of(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the SR instances of a study."""
        response = httpx.get(f"{self.url}/dicom-web/studies/{study_uid}/instances", params={"Modality": "SR"})
        return response.json() if response.status_code == 200 and response.content else []


def until(found, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.3)
    return found()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, str]]:
    if not (ORTHANC.exists() and DICOMWEB_PLUGIN.exists()):
        message = "no Orthanc: install Debian's orthanc and orthanc-dicomweb (scripts/system_packages.sh does)"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    from app.main import create_app
    from app.settings import Settings
    from tests.model_fixtures import export_untrained

    folder = tmp_path_factory.mktemp("orthanc")
    models = folder / "models"
    export_untrained(models, "pneumonia", size=48, modality="chest_xray")
    medscan_port, scp_port = free_port(), free_port()
    orthanc = Orthanc(folder, f"http://127.0.0.1:{medscan_port}", scp_port)
    settings = Settings(
        models_dir=models, modality_check=False, results_dicomweb_url=f"{orthanc.url}/dicom-web",
        results_outbox_dir=folder / "outbox", results_poll_s=0.2, dicom_port=scp_port, dicom_host="127.0.0.1",
    )  # fmt: skip
    orthanc.start()
    try:
        with live_server(create_app(settings), port=medscan_port) as url:
            yield orthanc, url
    finally:
        orthanc.stop()  # also when MedScan failed to start: no Orthanc left behind


def read_sr(orthanc: Orthanc, study_uid: str, item: dict):
    import highdicom as hd
    from dicomweb_client.api import DICOMwebClient

    series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
    dataset = DICOMwebClient(f"{orthanc.url}/dicom-web").retrieve_instance(study_uid, series, sop)
    return hd.sr.ComprehensiveSR.from_dataset(dataset)


def finding_of(report) -> tuple[str, float]:
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in report.ContentSequence}
    finding = items["Finding"].ConceptCodeSequence[0].CodeMeaning
    probability = float(items["Calibrated probability of the positive class"].MeasuredValueSequence[0].NumericValue)
    return finding, probability


def test_orthanc_sends_a_study_by_stow_rs_and_gets_the_sr_back(pacs) -> None:
    orthanc, url = pacs
    chest = instance("DX", "CHEST", seed=11)
    stored = orthanc.upload(encoded(chest))
    sent = httpx.post(f"{orthanc.url}/dicom-web/servers/medscan/stow", json={"Resources": [stored["ParentStudy"]]},
                      timeout=60)  # fmt: skip
    assert sent.status_code == 200, sent.text
    (item,) = until(lambda: orthanc.sr_of(chest.StudyInstanceUID))
    report = read_sr(orthanc, chest.StudyInstanceUID, item)
    finding, probability = finding_of(report)
    direct = httpx.post(
        f"{url}/predict/pneumonia", content=encoded(chest), headers={"Content-Type": "application/dicom"}
    )
    assert finding == f"pneumonia: {direct.json()['label']}"
    assert probability == pytest.approx(direct.json()["score"], abs=1e-6)
    assert report.StudyInstanceUID == chest.StudyInstanceUID and report.PatientID == chest.PatientID
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == chest.SOPInstanceUID


def test_orthanc_sends_an_instance_by_c_store_and_gets_the_sr_back(pacs) -> None:
    orthanc, _ = pacs
    chest = instance("DX", "CHEST", seed=12)
    stored = orthanc.upload(encoded(chest))
    sent = httpx.post(f"{orthanc.url}/modalities/medscan/store", json={"Resources": [stored["ID"]]}, timeout=60)
    assert sent.status_code == 200, sent.text
    (item,) = until(lambda: orthanc.sr_of(chest.StudyInstanceUID))
    assert finding_of(read_sr(orthanc, chest.StudyInstanceUID, item))[0].startswith("pneumonia: ")


def test_results_sent_by_c_store_arrive_too(pacs) -> None:
    from app.pacs.report import structured_report
    from app.pacs.senders import cstore_sender
    from app.runtime.inference import Screening

    orthanc, _ = pacs
    chest = instance("DX", "CHEST", seed=13)
    screening = Screening("pneumonia", 1, "uninfected", 0.2, {"infected": 0.2, "uninfected": 0.8}, 0.5, True,
                          None, None, (64, 64), None, "research use only", None, False, False, None)  # fmt: skip
    cstore_sender(f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "MEDSCAN")(structured_report(chest, screening))
    assert len(until(lambda: orthanc.sr_of(chest.StudyInstanceUID))) == 1


def test_a_pacs_down_mid_way_still_gets_every_sr_once(pacs) -> None:
    orthanc, url = pacs
    studies = [instance("DX", "CHEST", seed=20 + i) for i in range(3)]
    orthanc.stop()
    try:
        body, content_type = multipart_related([(encoded(chest), "application/dicom") for chest in studies])
        answered = httpx.post(f"{url}/dicomweb/studies", content=body, headers={"Content-Type": content_type},
                              timeout=60)  # fmt: skip
        assert answered.status_code == 200, answered.text
        time.sleep(1.5)  # a few delivery attempts fail meanwhile
        assert len(list((orthanc.folder / "outbox").glob("*.dcm"))) == 3  # waiting on disk
    finally:
        orthanc.start()
    for chest in studies:
        assert len(until(lambda chest=chest: orthanc.sr_of(chest.StudyInstanceUID), timeout_s=90)) == 1
    assert until(lambda: not list((orthanc.folder / "outbox").glob("*.dcm")), timeout_s=30)
    metrics = httpx.get(f"{url}/metrics").text
    assert "medscan_results_delivery_failures_total" in metrics

"""Where results go: a DICOMweb server by STOW-RS (dicomweb-client), or a DICOM node by C-STORE (pynetdicom)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from app.pacs.outbox import Sender


class DeliveryFailed(Exception):
    """The destination did not take the object."""


def dicomweb_sender(url: str, timeout_s: float = 30.0) -> Sender:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url.rstrip("/"))
    client._session.timeout = timeout_s  # type: ignore[attr-defined]

    def send(dataset: Dataset) -> None:
        client.store_instances([dataset])  # raises on a failure status

    return send


def parse_destination(destination: str) -> tuple[str, str, int]:
    """ "AE_TITLE@host:port" -> its parts."""
    try:
        ae_title, address = destination.split("@", 1)
        host, port = address.rsplit(":", 1)
        return ae_title, host, int(port)
    except ValueError:
        raise ValueError(f"a C-STORE destination is AE_TITLE@host:port, not {destination!r}") from None


def cstore_sender(destination: str, calling_ae: str, timeout_s: float = 30.0) -> Sender:
    from pynetdicom import AE

    ae_title, host, port = parse_destination(destination)

    def send(dataset: Dataset) -> None:
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        association = ae.associate(host, port, ae_title=ae_title)
        if not association.is_established:
            raise DeliveryFailed(f"no association with {destination}")
        try:
            status = association.send_c_store(dataset)
        finally:
            association.release()
        if not status or status.Status != 0x0000:
            raise DeliveryFailed(f"{destination} answered C-STORE with status {getattr(status, 'Status', None)}")

    return send

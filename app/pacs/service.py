"""The PACS side of the service, started and stopped with it: the outbox's delivery task (when a results
destination is set) and the C-STORE SCP (when a DICOM port is set)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from app.pacs.ingest import PacsIngest
from app.pacs.outbox import Outbox, Sender
from app.pacs.scp import StoreSCP
from app.pacs.senders import cstore_sender, dicomweb_sender
from app.runtime.inference import InferencePipeline
from app.settings import Settings

log = logging.getLogger("medscan.pacs")


def results_sender(settings: Settings) -> Sender | None:
    if settings.results_dicomweb_url:
        return dicomweb_sender(settings.results_dicomweb_url)
    if settings.results_cstore:
        return cstore_sender(settings.results_cstore, settings.dicom_ae_title)
    return None


@dataclass
class PacsService:
    ingest: PacsIngest
    outbox: Outbox | None = None
    delivery: asyncio.Task | None = None
    scp: StoreSCP | None = None

    async def stop(self) -> None:
        if self.scp is not None:
            await asyncio.to_thread(self.scp.stop)
        if self.delivery is not None:
            self.delivery.cancel()


def start(settings: Settings, pipeline: InferencePipeline) -> PacsService:
    sender = results_sender(settings)
    outbox = Outbox(settings.results_outbox_dir, sender, settings.results_poll_s) if sender else None
    service = PacsService(PacsIngest(pipeline, settings.dicom_routes, outbox, settings.results_overlays), outbox)
    if outbox is not None:
        service.delivery = asyncio.create_task(outbox.run())
        log.info("results go to %s; %d waiting in %s", settings.results_dicomweb_url or settings.results_cstore,
                 outbox.pending, outbox.folder)  # fmt: skip
    if settings.dicom_port:
        service.scp = StoreSCP(service.ingest, asyncio.get_running_loop(), settings.dicom_ae_title)
        service.scp.start(settings.dicom_host, settings.dicom_port)
    return service

"""DICOM network in: a C-STORE SCP (pynetdicom) for PACS and modalities that do not speak DICOMweb. Each instance
received is answered like a STOW-RS one (ingest.py); the C-STORE status says whether it was (0x0000) or why not.
pynetdicom runs each association in its own thread; the answer is computed on the service's event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.pacs.ingest import PacsIngest

log = logging.getLogger("medscan.pacs")
ANSWER_TIMEOUT_S = 120.0
SUCCESS = 0x0000


class StoreSCP:
    def __init__(self, ingest: PacsIngest, loop: asyncio.AbstractEventLoop, ae_title: str) -> None:
        self.ingest = ingest
        self.loop = loop
        self.ae_title = ae_title
        self._server: Any = None

    def handle_store(self, event) -> int:
        """EVT_C_STORE: the instance as sent (file meta included), answered on the event loop."""
        data = event.encoded_dataset()
        future = asyncio.run_coroutine_threadsafe(self.ingest.instance(data), self.loop)
        try:
            outcome = future.result(timeout=ANSWER_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a failure of ours is a processing failure for the sender, and logged
            log.exception("C-STORE from %s not answered", event.assoc.requestor.ae_title)
            return 0x0110
        if not outcome.ok:
            log.info("C-STORE %s refused: %s", outcome.sop_instance_uid, outcome.failure)
            return outcome.failure_code
        return SUCCESS

    def start(self, host: str, port: int) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.handle_store)])
        log.info("C-STORE SCP %s listening on %s:%d", self.ae_title, host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

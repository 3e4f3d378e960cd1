"""Results waiting to reach the PACS: each SR written to a folder on disk (beside, then renamed: a crash leaves
no half file), sent by a background task, removed only once the PACS took it. A PACS that is down loses nothing:
each file is retried with exponential backoff (1 s doubling to 5 min), counted in metrics and logged. A file's
name is its SOP Instance UID, so a result queued twice is one file, and one object in the PACS."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

log = logging.getLogger("medscan.pacs")
FIRST_RETRY_S, LAST_RETRY_S = 1.0, 300.0
SUFFIX = ".dcm"

Sender = Callable[[Dataset], None]  # blocking; raises on failure


@dataclass
class Outbox:
    folder: Path
    send: Sender
    poll_s: float = 1.0
    sent: int = 0
    failures: int = 0
    _retry_at: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (when, the wait after it)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, dataset: Dataset) -> Path:
        """Queue an SR durably (written and fsynced before this returns)."""
        target = self.folder / f"{dataset.SOPInstanceUID}{SUFFIX}"
        partial = self.folder / f".{target.name}.{os.getpid()}.partial"
        with partial.open("wb") as file:
            dataset.save_as(file, enforce_file_format=True)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(target)
        return target

    def counts(self) -> tuple[int, int, int]:
        """(waiting, delivered, failed attempts), for the metrics."""
        return self.pending, self.sent, self.failures

    @property
    def pending(self) -> int:
        return sum(1 for _ in self.folder.glob(f"*{SUFFIX}"))

    def deliver_due(self) -> int:
        """Try every file whose retry time has come; blocking. Returns how many were delivered."""
        delivered = 0
        for path in sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
            when, wait = self._retry_at.get(path.name, (0.0, FIRST_RETRY_S))
            if time.monotonic() < when:
                continue
            try:
                self.send(dcmread(path))
            except Exception as error:  # noqa: BLE001 - any failure to deliver: keep the file, try again later
                self.failures += 1
                self._retry_at[path.name] = (time.monotonic() + wait, min(wait * 2, LAST_RETRY_S))
                log.warning("result %s not delivered (%s); retrying in %.0f s", path.stem, error, wait)
                continue
            path.unlink(missing_ok=True)
            self._retry_at.pop(path.name, None)
            self.sent += 1
            delivered += 1
            log.info("result %s delivered", path.stem)
        return delivered

    async def run(self) -> None:
        """Deliver forever (until cancelled), one pass per poll, off the event loop."""
        while True:
            await asyncio.to_thread(self.deliver_due)
            await asyncio.sleep(self.poll_s)

"""A request body as it streams in: kept in memory up to a size, in a temporary file beyond it.

Read whole with `request.body()`, a body was held twice (Starlette's chunks, then their join) and a form's file
part a third time (its slice); 64 large uploads waiting for the decode budget held gigabytes that way. Spooled,
a body waiting or still arriving costs memory only up to `spool_memory_bytes` (the rest is on disk), and what
the pipeline is given is one copy of each image's bytes. The body-size limit (body_limit.py) caps the spool.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from starlette.requests import Request


class BodySpool:
    """Bytes in memory up to `memory_bytes`, then all of them in an unnamed temporary file (gone when closed)."""

    def __init__(self, memory_bytes: int, directory: Path | None = None) -> None:
        self.memory_bytes = memory_bytes
        self.directory = directory
        self.size = 0
        self._memory = bytearray()
        self._file: BinaryIO | None = None
        self._view: mmap.mmap | None = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size <= self.memory_bytes:
            self._memory += chunk
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.directory)
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(chunk)

    def read(self) -> bytes:
        """The whole body as one bytes object (a raw image body: the pipeline's one copy)."""
        if self._file is None:
            return bytes(self._memory)
        self._file.seek(0)
        return self._file.read()

    def view(self) -> bytes | mmap.mmap:
        """The whole body to search without reading it into memory (a form: only its parts are copied out)."""
        if self._file is None or self.size == 0:
            return bytes(self._memory)
        self._file.flush()
        self._view = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._view

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
        if self._file is not None:
            self._file.close()
        self._memory = bytearray()


@asynccontextmanager
async def spooled(request: Request, memory_bytes: int, directory: Path | None = None) -> AsyncIterator[BodySpool]:
    """The request's body, read to its end into a spool that is closed (its file deleted) on leaving."""
    spool = BodySpool(memory_bytes, directory)
    try:
        async for chunk in request.stream():
            if chunk:
                spool.write(chunk)
        yield spool
    finally:
        spool.close()

"""The request-body spool: small bodies in memory, large ones in a temporary file that is gone when closed, and
a form's parts read from either alike."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from app.api.multipart import form_files
from app.api.spool import BodySpool


def test_a_small_body_stays_in_memory_and_reads_back_whole() -> None:
    spool = BodySpool(memory_bytes=10)
    for chunk in (b"abc", b"defg"):
        spool.write(chunk)
    assert not spool.on_disk and spool.size == 7
    assert spool.read() == b"abcdefg" and spool.view() == b"abcdefg"
    spool.close()


def test_a_large_body_goes_to_a_file_that_is_deleted_on_close(tmp_path: Path) -> None:
    spool = BodySpool(memory_bytes=4, directory=tmp_path)
    chunks = [b"abc", b"defg", os.urandom(100_000)]
    for chunk in chunks:
        spool.write(chunk)
    assert spool.on_disk and spool.size == sum(map(len, chunks))
    assert spool.read() == b"".join(chunks)
    view = spool.view()
    assert bytes(view[:7]) == b"abcdefg" and view.find(chunks[2][:50]) == 7
    open_files = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    spool.close()
    assert view.closed and len(os.listdir(f"/proc/{os.getpid()}/fd")) < open_files
    assert list(tmp_path.iterdir()) == []  # an unnamed file: never visible, never left behind


@pytest.mark.parametrize("memory_bytes", [0, 1 << 20], ids=["on-disk", "in-memory"])
def test_a_form_reads_the_same_from_either_spool(memory_bytes: int) -> None:
    first, second = b"\x89PNG\r\n--not-a-boundary\r\n\r\n" * 100, os.urandom(300_000)
    request = httpx.Request("POST", "http://x/", files=[("file", ("a.png", first, "image/png")),
                                                         ("file", ("b.bin", second, "image/png"))])  # fmt: skip
    body = request.read()
    spool = BodySpool(memory_bytes)
    for start in range(0, len(body), 65536):
        spool.write(body[start : start + 65536])
    assert spool.on_disk == (memory_bytes == 0)
    files = form_files(spool.view(), request.headers["content-type"], "file")
    assert [(f.filename, f.data) for f in files] == [("a.png", first), ("b.bin", second)]
    assert all(type(f.data) is bytes for f in files)  # copied out: the spool can close
    spool.close()

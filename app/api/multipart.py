"""multipart bodies (form-data, RFC 7578; related, RFC 2387) -> their parts, found in one pass.

Starlette's form parser (python-multipart) runs a byte-by-byte state machine in Python and spools every
part through a temporary file; for the one image of a /predict request it cost more than decoding the image
(benchmarks/results/serving-profile.md). Here the body is already spooled (app/api/spool.py: bytes, or a
memory map of its file), so the parts are found with `find` and only their contents are copied out. Header
parameters (quoted names, escaped quotes) are read with python-multipart's own `parse_options_header`, as
Starlette does.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

from app.runtime.inference import Upload

Body = bytes | mmap.mmap  # a spooled body (app/api/spool.py)
CRLF = b"\r\n"
HEADERS_END = b"\r\n\r\n"


class MalformedForm(Exception):
    """The body says it is multipart (form-data, or related for STOW-RS) but is not."""


class NotMultipartRelated(Exception):
    """A STOW-RS body that is not multipart/related."""


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not boundary or len(boundary) > 200:  # RFC 2046: 1-70 characters; some clients send more
        raise MalformedForm(
            f"{kind.decode('latin-1') or 'a multipart body'} needs a boundary parameter in its Content-Type"
        )
    return boundary


def _at(body: Body, position: int, expected: bytes) -> bool:
    """`body.startswith(expected, position)`, for a memory map too."""
    return body[position : position + len(expected)] == expected


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-case names
    data: bytes


def parts_of(body: Body, content_type: str) -> Iterator[Part]:
    """Every part of a multipart body (form-data or related), in order, its contents copied out."""
    delimiter = b"--" + boundary_of(content_type)
    if _at(body, 0, delimiter):
        position = len(delimiter)
    else:  # a preamble before the first delimiter
        found = body.find(CRLF + delimiter)
        if found < 0:
            raise MalformedForm("the multipart body has no part: its boundary does not occur in it")
        position = found + len(CRLF) + len(delimiter)
    while True:
        if _at(body, position, b"--"):  # the closing delimiter
            return
        position = _skip_line_end(body, position)
        if _at(body, position, CRLF):  # a part without headers
            headers_end, data_start = position, position + len(CRLF)
        else:
            headers_end = body.find(HEADERS_END, position)
            if headers_end < 0:
                raise MalformedForm("a multipart part's headers do not end")
            data_start = headers_end + len(HEADERS_END)
        data_end = body.find(CRLF + delimiter, data_start)
        if data_end < 0:
            raise MalformedForm("the multipart body ends inside a part: its closing boundary is missing")
        yield Part(_headers(body[position:headers_end]), body[data_start:data_end])
        position = data_end + len(CRLF) + len(delimiter)


def form_files(body: Body, content_type: str, field: str) -> list[Upload]:
    """Every part named `field`, in order, as uploads (with or without a filename); other fields are ignored."""
    wanted = field.encode()
    files: list[Upload] = []
    for part in parts_of(body, content_type):
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        if disposition.get(b"name") == wanted:
            filename = disposition.get(b"filename")
            files.append(
                Upload(
                    data=part.data,
                    filename=filename.decode("utf-8", "replace") if filename is not None else None,
                    content_type=part.headers.get("content-type"),
                )
            )
    return files


def _skip_line_end(body: Body, position: int) -> int:
    """After a delimiter: optional spaces or tabs (RFC 2046's transport padding), then CRLF."""
    while body[position : position + 1] in (b" ", b"\t"):
        position += 1
    if not _at(body, position, CRLF):
        raise MalformedForm("a multipart boundary is not followed by a line end")
    return position + len(CRLF)


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF) if block else ():
        name, colon, value = line.partition(b":")
        if not colon:
            raise MalformedForm("a multipart part has a header line without a colon")
        # latin-1 keeps every byte: parse_options_header encodes it back, and a filename is then read as UTF-8
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers

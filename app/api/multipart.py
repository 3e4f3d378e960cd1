"""multipart/form-data bodies (RFC 7578) -> the files of one field, found in memory in one pass.

Starlette's form parser (python-multipart) runs a byte-by-byte state machine in Python and spools every
part through a temporary file; for the one image of a /predict request it cost more than decoding the image
(benchmarks/results/serving-profile.md). Here the body is already in memory (the body limit bounds it), so the
parts are found with `bytes.find`. Header parameters (quoted names, escaped quotes) are read with
python-multipart's own `parse_options_header`, as Starlette does.
"""

from __future__ import annotations

from python_multipart.multipart import parse_options_header

from app.inference import Upload

CRLF = b"\r\n"
HEADERS_END = b"\r\n\r\n"


class MalformedForm(Exception):
    """The body says it is multipart/form-data but is not."""


def boundary_of(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not boundary or len(boundary) > 200:  # RFC 2046: 1-70 characters; some clients send more
        raise MalformedForm("multipart/form-data needs a boundary parameter in its Content-Type")
    return boundary


def form_files(body: bytes, content_type: str, field: str) -> list[Upload]:
    """Every part named `field`, in order, as uploads (with or without a filename); other fields are ignored."""
    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble before the first delimiter
        found = body.find(CRLF + delimiter)
        if found < 0:
            raise MalformedForm("the multipart body has no part: its boundary does not occur in it")
        position = found + len(CRLF) + len(delimiter)
    wanted = field.encode()
    files: list[Upload] = []
    while True:
        if body.startswith(b"--", position):  # the closing delimiter
            return files
        position = _skip_line_end(body, position)
        if body.startswith(CRLF, position):  # a part without headers
            headers_end, data_start = position, position + len(CRLF)
        else:
            headers_end = body.find(HEADERS_END, position)
            if headers_end < 0:
                raise MalformedForm("a multipart part's headers do not end")
            data_start = headers_end + len(HEADERS_END)
        data_end = body.find(CRLF + delimiter, data_start)
        if data_end < 0:
            raise MalformedForm("the multipart body ends inside a part: its closing boundary is missing")
        headers = _headers(body[position:headers_end])
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        if disposition.get(b"name") == wanted:
            filename = disposition.get(b"filename")
            files.append(
                Upload(
                    data=body[data_start:data_end],
                    filename=filename.decode("utf-8", "replace") if filename is not None else None,
                    content_type=headers.get("content-type"),
                )
            )
        position = data_end + len(CRLF) + len(delimiter)


def _skip_line_end(body: bytes, position: int) -> int:
    """After a delimiter: optional spaces or tabs (RFC 2046's transport padding), then CRLF."""
    while body[position : position + 1] in (b" ", b"\t"):
        position += 1
    if not body.startswith(CRLF, position):
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

"""The multipart/form-data reader: the files of one field, as browsers, curl and httpx send them."""

from __future__ import annotations

import httpx
import pytest

from app.api.multipart import MalformedForm, form_files, parts_of

FORM_B = "multipart/form-data; boundary=b"


def encoded(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A body and Content-Type exactly as httpx (and so the test client) writes them."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_every_part_of_the_field_in_order_with_names_and_types_and_other_fields_ignored() -> None:
    first, second = b"\x89PNG\r\n--not-a-boundary\r\n\r\n", bytes(range(256)) * 4
    body, content_type = encoded(
        [
            ("file", ("a b.png", first, "image/png")),
            ("other", ("o.txt", b"x", "text/plain")),
            ("file", ("é.jpg", second, "image/jpeg")),
        ],  # fmt: skip
        data={"note": "ignored"},
    )
    files = form_files(body, content_type, "file")
    assert [f.data for f in files] == [first, second]
    assert [f.filename for f in files] == ["a b.png", "é.jpg"]
    assert [f.content_type for f in files] == ["image/png", "image/jpeg"]


def test_quoted_names_a_part_without_headers_and_a_preamble() -> None:
    body = (
        b'preamble\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\\"b"\r\n\r\nDATA\r\n'
        b"--XyZ\r\n\r\nheaderless\r\n--XyZ--\r\nepilogue"
    )
    (upload,) = form_files(body, 'multipart/form-data; boundary="XyZ"', "file")
    assert (upload.data, upload.filename, upload.content_type) == (b"DATA", 'a"b', None)


def test_an_empty_part_is_an_empty_file_and_no_such_field_is_no_file() -> None:
    body, content_type = encoded([("file", ("x.png", b"", "image/png"))])
    assert [f.data for f in form_files(body, content_type, "file")] == [b""]
    assert form_files(body, content_type, "image") == []


@pytest.mark.parametrize(
    ("body", "content_type", "phrase"),
    [
        (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data", "boundary"),
        (b"no delimiter at all", "multipart/form-data; boundary=b", "does not occur"),
        (b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nx", FORM_B, "ends inside"),
        (b"--b\r\nContent-Disposition: form-data; name=file", "multipart/form-data; boundary=b", "do not end"),
        (b"--bjunk\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", "line end"),
        (b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", "colon"),
    ],
)
def test_a_malformed_body_says_what_is_wrong(body: bytes, content_type: str, phrase: str) -> None:
    with pytest.raises(MalformedForm, match=phrase):
        form_files(body, content_type, "file")


@pytest.mark.parametrize("kind", ["multipart/form-data", 'multipart/related; type="application/dicom"'])
def test_a_missing_boundary_is_named_for_the_type_sent(kind: str) -> None:
    with pytest.raises(MalformedForm, match=f"^{kind.split(';')[0]} needs a boundary"):
        list(parts_of(b"--b\r\n\r\nx\r\n--b--", kind))

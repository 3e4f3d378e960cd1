"""uvicorn's httptools protocol with the limits it lacks against slow and oversized requests.

uvicorn bounds neither how long a client may take to send its headers or its body, nor how large the headers
may grow (measured: 200 connections sending 4 bytes/s stayed open for 55 s; a 64 MB header was accepted and
cost 128 MB per connection). This protocol answers, and closes the connection:
- 408 when the request line and headers are not complete `header_timeout_s` after their first byte (or after
  the connection opened, for a client that sends nothing);
- 431 when they pass `max_header_bytes` before they are complete (checked after each read, so at most one
  read past the limit is ever held);
- 408 when a declared body has not arrived `body_timeout_s` after the headers, and no answer was started (a
  connection whose request was answered without its body, which then never came, is closed).
The number of connections is bounded by uvicorn's own `limit_concurrency` (503 beyond it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import get_settings

STATUS_LINES = {408: b"HTTP/1.1 408 Request Timeout\r\n", 431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n"}


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response in MedScan's error shape, with Connection: close."""
    body = orjson.dumps({"error": {"status": status, "code": code, "message": message}})
    return b"".join(
        [
            STATUS_LINES[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self._awaiting_headers = True
        self._header_bytes = 0
        self._refused = False  # answered already: the parser's further callbacks are ignored
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._awaiting_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "headers_too_large", f"the request's headers pass {self.max_header_bytes:,} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers, self._header_bytes = True, 0
        if self._timer is None:  # a new request on a kept-alive connection
            self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        # Headers that arrived whole in one or two reads are measured here, before the app sees them.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refuse(431, "headers_too_large", f"the request's headers pass {self.max_header_bytes:,} bytes")
            return
        super().on_headers_complete()
        if self._has_body():
            self._arm(self.body_timeout_s, self._body_too_slow)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    def _has_body(self) -> bool:
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"0")
        return (length.isdigit() and int(length) > 0) or b"chunked" in headers.get(b"transfer-encoding", b"")

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self._awaiting_headers:
            self._refuse(408, "request_timeout", f"the request's headers took over {self.header_timeout_s:g} s")

    def _body_too_slow(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # what the app still sends is dropped; it sees the client gone
            cycle.message_event.set()
            self._refuse(408, "request_timeout", f"the request's body took over {self.body_timeout_s:g} s")
        elif not self.transport.is_closing():  # answered already (without reading it): the rest never came
            self._refused = True
            self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, code, message))
            self.transport.close()

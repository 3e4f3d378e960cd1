"""Slow and oversized requests are cut off by the server's protocol: 408 for slow headers or a short body,
431 for oversized headers, each with MedScan's error body and the connection closed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request

from app.settings import Settings
from tests.live_server import live_server

HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 1.0, 1.0


@pytest.fixture(scope="module")
def server(monkeypatch_module) -> Iterator[tuple[str, int]]:
    from app.api import http_protocol

    limits = Settings(header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S, max_header_bytes=8192)
    monkeypatch_module.setattr(http_protocol, "get_settings", lambda: limits)
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    with live_server(app, http="app.api.http_protocol:GuardedHttpToolsProtocol") as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def connect(server: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(server, timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)  # the server closed the connection


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_plain_request_and_a_kept_alive_second_one_are_answered(server):
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            assert b'{"bytes":5}' in sock.recv(65536)


def test_headers_that_never_finish_get_408_and_the_connection_closes(server):
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        status, body = status_and_body(read_all(sock))
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert HEADER_TIMEOUT_S * 0.9 <= time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        status, _ = status_and_body(read_all(sock))
    assert status == 408


def test_headers_dripping_in_are_cut_off_at_the_timeout(server):
    with connect(server) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass  # closed under us: the point
        response = read_all(sock)
    assert status_and_body(response)[0] == 408 and time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_oversized_headers_get_431(server):
    with connect(server) as sock:
        try:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        except OSError:
            pass
        status, body = status_and_body(read_all(sock))
    assert status == 431 and body["error"]["code"] == "headers_too_large"


def test_a_body_shorter_than_declared_gets_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
        status, body = status_and_body(read_all(sock))
    assert status == 408 and "body" in body["error"]["message"]


def test_a_connection_answered_without_its_body_is_closed_when_the_body_never_comes(server):
    with connect(server) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        started = time.monotonic()
        response = read_all(sock)  # the answer, then the close at the body timeout
    assert response.startswith(b"HTTP/1.1 200") and time.monotonic() - started < BODY_TIMEOUT_S + 3


def test_many_slow_connections_are_all_closed_within_the_timeout(server):
    sockets = [connect(server) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /ping HTTP/1.1\r\n")
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 5
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert status_and_body(read_all(sock))[0] == 408
    finally:
        for sock in sockets:
            sock.close()

"""SIGTERM under load, on the real `medscan serve` process: in-flight requests finish, new ones get 503
while it drains, and the process exits with code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.images import blob, image_bytes
from tests.live_server import free_port


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drains_and_exits_0(trust_models: Path, tmp_path: Path, workers: int) -> None:
    port = free_port()
    log_file = (tmp_path / "server.log").open("wb")  # a pipe nobody reads would fill and block the server
    env = {
        **os.environ,
        "MEDSCAN_MODELS_DIR": str(trust_models),
        # long enough that the two health checks below land inside the drain even on a loaded CI machine
        # (with 1.5 s a slow answer to the first left the second to a closed socket)
        "MEDSCAN_SHUTDOWN_DRAIN_S": "5",
        "MEDSCAN_MODEL_POLL_INTERVAL_S": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.2)

        png = image_bytes(blob(50, infected=True, seed=3))
        outcomes: list[tuple[float, int | str]] = []  # (time sent, status or transport error)
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=20) as session:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status: int | str = session.post(
                            "/predict/malaria", files={"file": ("c.png", png, "image/png")}
                        ).status_code
                    except httpx.TransportError as error:  # after the drain the socket is closed
                        status = type(error).__name__
                    outcomes.append((sent, status))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        sigterm_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready_while_draining = httpx.get(url + "/health/ready", timeout=5)
        assert ready_while_draining.status_code == 503
        assert ready_while_draining.json()["error"]["code"] == "shutting_down"
        assert httpx.get(url + "/health/live", timeout=5).status_code == 200  # alive until it exits
        exit_code = server.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        if server.poll() is None:
            server.kill()
    log_file.close()
    assert exit_code == 0, (tmp_path / "server.log").read_text()[-2000:]
    before = [status for sent, status in outcomes if sent < sigterm_at - 0.05]
    after = [status for sent, status in outcomes if sent > sigterm_at + 0.05]
    assert before and set(before) == {200}, "requests before the stop must all succeed"
    assert 503 in after and set(after) <= {200, 503, "ConnectError", "RemoteProtocolError", "ReadError"}
    assert not any(isinstance(status, int) and status >= 500 and status != 503 for _, status in outcomes)


def read_response(connection) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length (headers and body may come in separate reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return data  # closed by the server
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.slow
def test_a_keep_alive_connection_idle_past_a_clients_pool_expiry_still_answers(trust_models: Path) -> None:
    """httpx keeps an idle connection 5 s, uvicorn's default was 5 s too: a client reusing it as the server
    closed it read nothing (a ReadError). The server now keeps it longer than common clients do."""
    import socket

    port = free_port()
    env = {**os.environ, "MEDSCAN_MODELS_DIR": str(trust_models), "MEDSCAN_MODEL_POLL_INTERVAL_S": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    request = f"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
        with connection:
            for wait_s in (0.0, 6.0):  # the second request after the idle time, on the same connection
                time.sleep(wait_s)
                connection.sendall(request)
                assert read_response(connection).startswith(b"HTTP/1.1 200"), f"no answer after {wait_s} s idle"
    finally:
        server.terminate()
        server.wait(30)

"""`medscan serve` as a subprocess on loopback, for the benchmarks that need the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.contract.machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_service(port: int, env: dict[str, str], startup_timeout_s: float = 180) -> Iterator[subprocess.Popen]:
    """The service started with `env` over this process's environment; yields it once /health/ready is 200,
    and stops it (SIGTERM, then wait) when the block ends."""
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=60)


def write_result(result: dict[str, Any], out: Path) -> int:
    """The result with the machine it ran on, as JSON to `out` and stdout; exit code 0 if it passed."""
    result["machine"] = f"{describe_machine()}; client and server on it"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1

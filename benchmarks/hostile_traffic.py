"""Hostile traffic against `medscan serve` on loopback: large images of every format at once, slow clients,
oversized headers and short bodies (issue 35's targets).

    .venv/bin/python -m benchmarks.hostile_traffic [--uploads 64] [--decode-memory-mb 445]

1. `--uploads` concurrent uploads of the largest images each format accepts (50-megapixel PNG, 16-bit PNG,
   deflate TIFF and JPEG; a 16-bit DICOM as large as the body limit allows), spread over the models, while a
   client sends small images one after another: every answer must be 200, 413 or 503 with Retry-After (no
   5xx), the server's peak resident memory (VmHWM) stays under `--memory-limit-mib` (our Kubernetes
   Deployment's limit, 4 GiB since 2026-12-03), and the small requests' p99 is reported (target <= 250 ms).
2. `--slow` connections that send half a request line and stop: all closed within the header timeout.
3. A 64 KiB header: 431. A body shorter than its Content-Length: 408.

The decode budget is set to what the Deployment's limit gives by default (`--decode-memory-mb`), since this
machine has no cgroup limit. Results: benchmarks/results/hostile-traffic.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.live_service import running_service, write_result

ROOT = Path(__file__).resolve().parent.parent
SIDE = 7070  # 49.98 megapixels: the largest square under the default MEDSCAN_MAX_IMAGE_PIXELS
SHORT_BODY = b"POST /predict/malaria HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nab"
MODELS = ("malaria", "pneumonia", "brain_tumor", "breast_cancer", "retinopathy")


def large_images() -> dict[str, tuple[bytes, str]]:
    """The largest image of each format within the pixel and body limits; smooth content, so they compress."""
    y, x = np.ogrid[0:SIDE, 0:SIDE]
    channels = [np.broadcast_to(((x * k + y) % 256).astype(np.uint8), (SIDE, SIDE)) for k in (1, 2, 3)]
    rgb = Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(c)) for c in channels])
    deep = Image.fromarray(np.ascontiguousarray(np.broadcast_to(((x + y) * 9 % 65536).astype(np.uint16), (SIDE, SIDE))))
    out = {}
    for name, image, fmt, kwargs, kind in (
        ("png_rgb", rgb, "PNG", {}, "image/png"),
        ("png_16bit", deep, "PNG", {}, "image/png"),
        ("tiff_deflate", rgb, "TIFF", {"compression": "tiff_adobe_deflate"}, "image/tiff"),
        ("jpeg", rgb, "JPEG", {"quality": 90}, "image/jpeg"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        out[name] = (buffer.getvalue(), kind)
    out["dicom_16bit"] = (dicom_bytes(3000), "application/dicom")  # 18 MB uncompressed, under the 20 MB body
    return out


def dicom_bytes(side: int) -> bytes:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.Modality, dataset.Rows, dataset.Columns = "DX", side, side
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    y, x = np.ogrid[0:side, 0:side]
    dataset.PixelData = ((x + y) % 4096).astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def large_uploads(base: str, images: dict, uploads: int) -> tuple[dict, list[float]]:
    statuses: Counter[str] = Counter()
    small_ms: list[float] = []
    done = asyncio.Event()
    names = list(images)

    async def upload(client: httpx.AsyncClient, index: int) -> None:
        name = names[index % len(names)]
        data, kind = images[name]
        model = MODELS[index % len(MODELS)]
        response = await client.post(f"/predict/{model}", files={"file": (name, data, kind)})
        retry = "+retry-after" if response.status_code == 503 and "retry-after" in response.headers else ""
        statuses[f"{response.status_code}{retry}"] += 1

    async def small(client: httpx.AsyncClient) -> None:
        data = small_png()
        while not done.is_set():
            started = time.perf_counter()
            response = await client.post("/predict/malaria", files={"file": ("s.png", data, "image/png")})
            small_ms.append((time.perf_counter() - started) * 1000)
            statuses[f"small {response.status_code}"] += 1

    limits = httpx.Limits(max_connections=uploads + 4)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        prober = asyncio.create_task(small(client))
        await asyncio.gather(*(upload(client, i) for i in range(uploads)))
        done.set()
        await prober
    return dict(statuses), small_ms


def slow_connections(host: str, port: int, count: int, timeout_s: float) -> dict:
    sockets = [socket.create_connection((host, port)) for _ in range(count)]
    started = time.monotonic()
    for sock in sockets:
        sock.sendall(b"POST /predict/malaria HTTP/1.1\r\nHost: x\r\n")
    closed_after = []
    for sock in sockets:
        sock.settimeout(timeout_s + 30)
        while sock.recv(65536):
            pass
        closed_after.append(time.monotonic() - started)
        sock.close()
    return {"connections": count, "all_closed_within_s": round(max(closed_after), 2)}


def raw_status(host: str, port: int, request: bytes) -> int:
    with socket.create_connection((host, port), timeout=60) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return int(response.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=64)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--decode-memory-mb", type=int, default=445)
    parser.add_argument("--memory-limit-mib", type=float, default=4096)
    parser.add_argument("--header-timeout-s", type=float, default=10)
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile-traffic.json")
    args = parser.parse_args()
    images = large_images()
    env = {
        "MEDSCAN_LOG_LEVEL": "warning",
        "MEDSCAN_MODEL_POLL_INTERVAL_S": "0",
        "MEDSCAN_DECODE_MEMORY_MB": str(args.decode_memory_mb),
        "MEDSCAN_HEADER_TIMEOUT_S": str(args.header_timeout_s),
        "MEDSCAN_BODY_TIMEOUT_S": "5",
        "MEDSCAN_DECODE_WAIT_S": "30",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    base = f"http://127.0.0.1:{args.port}"
    with running_service(args.port, env) as server:
        idle = peak_mib(server.pid)
        started = time.monotonic()
        statuses, small_ms = asyncio.run(large_uploads(base, images, args.uploads))
        result: dict[str, Any] = {
            "uploads": args.uploads,
            "images": {name: f"{len(data) / 2**20:.1f} MB" for name, (data, _) in images.items()},
            "decode_memory_mb": args.decode_memory_mb,
            "seconds": round(time.monotonic() - started, 1),
            "statuses": statuses,
            "peak_resident_mib": {"after_start": round(idle), "during_uploads": round(peak_mib(server.pid))},
            "small_requests": {
                "count": len(small_ms),
                "p50_ms": round(float(np.percentile(small_ms, 50)), 1) if small_ms else None,
                "p99_ms": round(float(np.percentile(small_ms, 99)), 1) if small_ms else None,
            },
            "slow_connections": slow_connections("127.0.0.1", args.port, args.slow, args.header_timeout_s),
            "header_64_kib": raw_status("127.0.0.1", args.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 65536 + b"\r\n\r\n"),
            "short_body": raw_status("127.0.0.1", args.port, SHORT_BODY),
        }
    no_5xx = not any(key.startswith("5") and "retry-after" not in key for key in statuses)
    result["passed"] = bool(
        no_5xx
        and result["peak_resident_mib"]["during_uploads"] < args.memory_limit_mib  # type: ignore[index]
        and result["header_64_kib"] == 431
        and result["short_body"] == 408
    )
    return write_result(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())

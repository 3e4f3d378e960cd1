"""Fuzz the service's hand-written request parsers with atheris, through the app itself: the multipart form of
/predict, STOW-RS's multipart/related, KServe V2's JSON and binary tensors, TF Serving's instances. Any 5xx is a
crash. Not part of the tests: run it by hand (after `pip install -e '.[test,fuzz]'`, for the fixture model).

    .venv/bin/python scripts/fuzz_requests.py /tmp/fuzz-requests -max_total_time=1200 -artifact_prefix=/tmp/fuzz-

A small untrained model is exported to a temporary folder first, so that requests reach the parsers behind the
model lookup. Crashes replay as in scripts/fuzz_decode.py."""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["app.api"]):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

BOUNDARY = "fuzz-boundary"
# (path, content type); the first input byte chooses one, the second may drop the boundary parameter
ROUTES = [
    ("/predict/malaria", f"multipart/form-data; boundary={BOUNDARY}"),
    ("/dicomweb/studies", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'),
    ("/v2/models/malaria/infer", "application/json"),
    ("/v2/models/malaria/infer", "application/octet-stream"),
    ("/v1/models/malaria:predict", "application/json"),
]


def _client() -> TestClient:
    from tests.model_fixtures import export_untrained

    models = Path(tempfile.mkdtemp(prefix="fuzz-models-"))
    export_untrained(models, "malaria", colour_mode="grayscale", size=50)
    client = TestClient(create_app(Settings(models_dir=models)), raise_server_exceptions=False)
    client.__enter__()  # the lifespan: models loaded, kept for the whole run
    return client


CLIENT = _client()


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    path, content_type = ROUTES[data[0] % len(ROUTES)]
    if data[1] % 8 == 0:
        content_type = content_type.split("; boundary")[0]
    headers = {"Content-Type": content_type}
    body = data[3:]
    if content_type == "application/octet-stream":  # V2's binary form: the JSON's length in a header
        headers["Inference-Header-Content-Length"] = str(min(data[2] * 4, len(body)))
    response = CLIENT.post(path, content=body, headers=headers)
    if response.status_code >= 500 and response.status_code != 503:  # 503: overloaded, a fair answer
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")


def seed_corpus(folder: Path) -> None:
    """One well-formed request per route, behind the bytes that choose it."""
    from tests.dicom_instances import encoded, instance
    from tests.images import gradient, image_bytes

    png = image_bytes(gradient(32, 32, "L"))
    b64 = base64.b64encode(png).decode()
    start, end = f"--{BOUNDARY}\r\n".encode(), f"\r\n--{BOUNDARY}--\r\n".encode()
    disposition = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
    form = start + disposition + b"Content-Type: image/png\r\n\r\n" + png + end
    related = start + b"Content-Type: application/dicom\r\n\r\n" + encoded(instance(side=16)) + end
    v2 = {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [b64]}],
          "outputs": [{"name": "score"}], "parameters": {"threshold": 0.5}}  # fmt: skip
    header = json.dumps({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(png) + 4}}]}).encode()  # fmt: skip
    header += b" " * (-len(header) % 4)  # its length is the third byte times 4
    binary = header + len(png).to_bytes(4, "little") + png
    tf = {"instances": [{"b64": b64}], "signature_name": "screening"}
    seeds = [
        bytes([0, 1, 0]) + form,
        bytes([1, 1, 0]) + related,
        bytes([2, 1, 0]) + json.dumps(v2).encode(),
        bytes([3, 1, len(header) // 4]) + binary,
        bytes([4, 1, 0]) + json.dumps(tf).encode(),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds):
        (folder / f"seed-{number}").write_bytes(seed)


if __name__ == "__main__":
    from fuzzing import fuzz  # scripts/fuzzing.py: this folder is on the path of a script run from it

    fuzz(one_input, seed_corpus)

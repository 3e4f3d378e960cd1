"""The Open Inference Protocol (KServe V2): with the official tritonclient over a real socket, and the
JSON edge cases by hand. Same pipeline, so the same probabilities as /predict."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.images import gradient, image_bytes, model_input

IMAGE = image_bytes(gradient(70, 60, "L"))  # gray, as the gray fixture models' images are


def ours(client, data: bytes = IMAGE, disease: str = "malaria") -> dict:
    return client.post(f"/predict/{disease}", files={"file": ("x.png", data, "image/png")}).json()


@pytest.fixture(scope="module")
def triton(trust_models: Path) -> Iterator[object]:
    import tritonclient.http as httpclient

    from app.main import create_app
    from app.settings import Settings
    from tests.live_server import live_server

    with live_server(create_app(Settings(models_dir=trust_models, max_batch_size=8))) as url:
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
        yield client
        client.close()


def test_tritonclient_health_and_metadata(triton) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("malaria") and triton.is_model_ready("malaria", "1")
    assert not triton.is_model_ready("malaria", "9")
    server = triton.get_server_metadata()
    assert server["name"] == "medscan" and "binary_tensor_data" in server["extensions"]
    meta = triton.get_model_metadata("malaria")
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["image"] == {"name": "image", "datatype": "FP32", "shape": [-1, 50, 50, 1]}
    assert inputs["image_bytes"]["datatype"] == "BYTES" and meta["versions"] == ["1"]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_input_matches_predict(triton, trust_client, binary: bool) -> None:
    import tritonclient.http as httpclient

    image = httpclient.InferInput("image_bytes", [2], "BYTES")
    if binary:
        image.set_data_from_numpy(np.array([IMAGE, IMAGE], dtype=np.object_), binary_data=True)
    else:  # JSON: binary content as base64 strings
        encoded = base64.b64encode(IMAGE).decode("ascii")
        image.set_data_from_numpy(np.array([encoded, encoded], dtype=np.object_), binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "label", "in_distribution")
    ]
    result = triton.infer("malaria", [image], outputs=outputs)
    expected = ours(trust_client)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities[:, 0], expected["score"], atol=1e-6)
    assert [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")] == [
        expected["label"]
    ] * 2
    assert result.as_numpy("in_distribution").tolist() == [1, 1]
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_fp32_input_and_version_pin(triton, trust_client) -> None:
    import tritonclient.http as httpclient

    pixels = model_input(
        IMAGE, trust_client.app.state.registry.models["malaria"].loaded.card.input.spec(), max_pixels=10**7
    )[np.newaxis]
    image = httpclient.InferInput("image", list(pixels.shape), "FP32")
    image.set_data_from_numpy(pixels.astype(np.float32), binary_data=True)
    result = triton.infer("malaria", [image], model_version="1")  # no outputs named: all, in binary
    np.testing.assert_allclose(result.as_numpy("score"), [ours(trust_client)["score"]], atol=1e-6)
    assert result.as_numpy("threshold").tolist() == pytest.approx([0.3])


def test_tritonclient_errors(triton) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    bad = httpclient.InferInput("image_bytes", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not an image"):
        triton.infer("malaria", [bad])
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.infer("cholera", [bad])
    wrong = httpclient.InferInput("image", [1, 8, 8, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(InferenceServerException, match="input shape"):
        triton.infer("malaria", [wrong])


def test_json_infer_by_hand_and_its_errors(trust_client) -> None:
    encoded = base64.b64encode(IMAGE).decode("ascii")
    request = {
        "id": "r1",
        "parameters": {"threshold": 0.99},
        "inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [encoded]}],
    }
    body = trust_client.post("/v2/models/malaria/versions/1/infer", json=request).json()
    assert body["id"] == "r1" and body["model_name"] == "malaria" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["threshold"]["data"] == [pytest.approx(0.99)]
    assert outputs["probabilities"]["shape"] == [1, 2]
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b'{"inputs": []}', 400, "non-empty"),
        (b'{"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}', 400, "base64"),
        (b'{"inputs": [{"name": "image", "shape": [2], "datatype": "FP32", "data": [1]}]}', 400, "do not fill"),
        (b'{"inputs": [{"name": "other", "shape": [1], "datatype": "FP32", "data": [1]}]}', 400, "exactly one input"),
    ]
    for raw, status, words in cases:
        response = trust_client.post(
            "/v2/models/malaria/infer", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, raw
        assert set(response.json()) == {"error"} and words in response.json()["error"], raw
    assert trust_client.post("/v2/models/malaria/versions/7/infer", json=request).status_code == 404
    unchecked = trust_client.post("/v2/models/breast_cancer/infer", json=request).json()  # no OOD statistics
    by_name = {o["name"]: o["data"] for o in unchecked["outputs"]}
    assert by_name["in_distribution"] == [-1] and by_name["ood_distance"] == [None]


def test_binary_extension_with_a_bad_length_is_a_400(trust_client) -> None:
    response = trust_client.post(
        "/v2/models/malaria/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    assert response.status_code == 400 and "does not fit" in response.json()["error"]


def _fp32(values: list, shape: list[int], datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": values}]}


ZEROS = [0.0] * (50 * 50)  # one malaria input of the trust models


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (json.dumps(_fp32([float("nan"), *ZEROS[1:]], [1, 50, 50, 1])), "finite and in [0, 1]"),
        (json.dumps(_fp32(["INF", *ZEROS[1:]], [1, 50, 50, 1])).replace('"INF"', "Infinity"), "finite and in [0, 1]"),
        (json.dumps(_fp32([2.0, *ZEROS[1:]], [1, 50, 50, 1])), "finite and in [0, 1]"),
        (json.dumps(_fp32([], [0, 50, 50, 1])), "got [0, 50, 50, 1]"),
        (json.dumps(_fp32(ZEROS, [1, 50, 50, 1], "INT32")), "must be FP32, got INT32"),
        (json.dumps({"inputs": [{"name": "image_bytes", "shape": [1, 2], "datatype": "BYTES",
                                 "data": ["aGk=", "aGk="]}]}),
         "must have shape [N] or [N, 1], got [1, 2]"),
        (json.dumps({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
         "must be BYTES, got FP32"),
        (json.dumps({**_fp32(ZEROS, [1, 50, 50, 1]), "outputs": [{"name": "nope"}]}), "unknown output 'nope'"),
        (json.dumps({**_fp32(ZEROS, [1, 50, 50, 1]), "outputs": {"name": "score"}}), "'outputs' must be a list"),
        (json.dumps({**_fp32(ZEROS, [1, 50, 50, 1]), "parameters": [1]}), "'parameters' must be an object"),
        (json.dumps({**_fp32(ZEROS, [1, 50, 50, 1]), "outputs": [{"name": "score", "parameters": 1}]}),
         "'parameters' must be an object"),
        ('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
    ],
    ids=["nan", "inf", "above-1", "empty-n", "datatype", "bytes-n-2", "bytes-as-fp32", "unknown-output",
         "outputs-not-a-list", "parameters-not-an-object", "output-parameters-not-an-object", "nested-too-deep"],
)  # fmt: skip
def test_protocol_inputs_that_cannot_be_answered_are_400_with_the_reason(trust_client, body: str, words: str) -> None:
    response = trust_client.post("/v2/models/malaria/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]

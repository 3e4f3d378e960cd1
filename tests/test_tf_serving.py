"""TensorFlow Serving's REST API over the same pipeline: status, metadata, :predict with b64 or arrays."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.images import gradient, image_bytes, model_input


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def test_status_reports_the_served_version_as_available(trust_client) -> None:
    body = trust_client.get("/v1/models/malaria").json()
    assert body == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert trust_client.get("/v1/models/malaria/versions/1").status_code == 200
    missing = trust_client.get("/v1/models/malaria/versions/7")
    assert missing.status_code == 404 and "Specific(malaria, 7)" in missing.json()["error"]
    unknown = trust_client.get("/v1/models/cholera")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}


def test_metadata_describes_the_input_and_both_signatures(trust_client) -> None:
    body = trust_client.get("/v1/models/malaria/metadata").json()
    assert body["model_spec"] == {"name": "malaria", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "screening"}
    dims = [int(d["size"]) for d in signatures["serving_default"]["inputs"]["image"]["tensor_shape"]["dim"]]
    assert dims == [-1, 50, 50, 1]


def test_predict_gives_the_same_probabilities_as_predict_for_images_and_arrays(trust_client) -> None:
    data = image_bytes(gradient(70, 60, "L"))
    ours = trust_client.post("/predict/malaria", files={"file": ("x.png", data, "image/png")}).json()
    array = model_input(data, _spec(trust_client), max_pixels=10**8)
    response = trust_client.post(
        "/v1/models/malaria:predict", json={"instances": [b64(data), array.tolist(), {"image": b64(data)}]}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for infected, uninfected in predictions:
        assert infected == pytest.approx(ours["score"], abs=1e-6) and infected + uninfected == pytest.approx(1.0)


def test_columnar_inputs_and_the_screening_signature(trust_client) -> None:
    data = image_bytes(gradient(40, 40, "L"))
    response = trust_client.post(
        "/v1/models/malaria/versions/1:predict", json={"signature_name": "screening", "inputs": {"image": [b64(data)]}}
    )
    assert response.status_code == 200, response.text
    (answer,) = response.json()["outputs"]
    assert answer["label"] in {"infected", "uninfected"} and answer["in_distribution"] is True
    assert answer["model_version"] == 1


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"instances": []}, "non-empty"),
        ({"instances": [{"b64": "not base64!"}]}, "base64"),
        ({"instances": [[[0.5] * 3] * 3]}, "input shape"),
        ({"instances": [np.full((50, 50, 1), 2.0).tolist()]}, "[0, 1]"),
        ({"instances": [{"b64": base64.b64encode(b"text").decode()}]}, "not an image"),
        ({"instances": [], "inputs": []}, "exactly one"),
        ({"signature_name": "classify", "instances": [[0]]}, "not found"),
        ({"inputs": {"pixels": [[0]]}}, "input names"),
    ],
)
def test_bad_requests_are_400_in_tf_serving_shape(trust_client, body, phrase) -> None:
    response = trust_client.post("/v1/models/malaria:predict", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and phrase in response.json()["error"]


def test_not_json_and_unknown_verbs(trust_client) -> None:
    response = trust_client.post(
        "/v1/models/malaria:predict", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    nested = '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}"  # deeper than the parser's stack
    response = trust_client.post(
        "/v1/models/malaria:predict", content=nested, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert trust_client.post("/v1/models/malaria:classify", json={}).status_code == 404
    assert trust_client.post("/v1/models/cholera:predict", json={"instances": [[0]]}).status_code == 404


def _spec(client):
    return client.app.state.registry.models["malaria"].loaded.card.input.spec()


@pytest.fixture(scope="module")
def two_versions_client(tmp_path_factory, model_factory):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    models = tmp_path_factory.mktemp("two-versions")
    model_factory(models, "malaria", seed=1)
    model_factory(models, "malaria", seed=2, size=48)
    settings = Settings(models_dir=models, version_policy="all", model_poll_interval_s=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_every_version_is_listed_and_can_be_pinned(two_versions_client) -> None:
    client = two_versions_client
    statuses = client.get("/v1/models/malaria").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in statuses] == [("2", "AVAILABLE"), ("1", "AVAILABLE")]
    data = b64(image_bytes(gradient(70, 60, "L")))
    for path, version in (
        ("/v1/models/malaria:predict", 2),
        ("/v1/models/malaria/versions/1:predict", 1),
        ("/v1/models/malaria/versions/2:predict", 2),
    ):
        body = client.post(path, json={"signature_name": "screening", "instances": [data]}).json()
        assert body["predictions"][0]["model_version"] == version, path
    meta = client.get("/v1/models/malaria/versions/1/metadata").json()
    dims = [
        int(d["size"])
        for d in meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["image"][
            "tensor_shape"
        ]["dim"]
    ]
    assert meta["model_spec"]["version"] == "1" and dims == [-1, 50, 50, 1]
    ours = client.post(
        "/predict/malaria?version=1", files={"file": ("x.png", image_bytes(gradient(70, 60, "L")), "image/png")}
    )
    assert ours.json()["model_version"] == 1

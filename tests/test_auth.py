"""Optional API keys and CORS."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.images import gradient, image_bytes

PNG = image_bytes(gradient(60, 50))


@pytest.fixture(scope="module")
def keyed_client(trust_models: Path, tmp_path_factory):
    from app.main import create_app
    from app.settings import Settings

    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("# operators\nfile-key\n\n")
    settings = Settings(
        models_dir=trust_models,
        api_keys=["env-key"],
        api_keys_file=key_file,
        cors_origins=["https://lab.example"],
        model_poll_interval_s=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def predict(client, **headers: str):
    return client.post("/predict/malaria", files={"file": ("x.png", PNG, "image/png")}, headers=headers)


def test_requests_without_a_valid_key_get_401_in_the_error_shape(keyed_client) -> None:
    missing = predict(keyed_client)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = predict(keyed_client, Authorization="Bearer nope")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    for protected in ("/models", "/v1/models/malaria", "/v2/models/malaria"):
        assert keyed_client.get(protected).status_code == 401, protected
    assert keyed_client.post("/admin/reload").status_code == 401
    stow = keyed_client.post(
        "/dicomweb/studies", content=b"--b--", headers={"Content-Type": "multipart/related; boundary=b"}
    )
    assert stow.status_code == 401  # a PACS needs a key like any client


def test_keys_from_the_environment_and_the_file_by_either_header(keyed_client) -> None:
    assert predict(keyed_client, Authorization="Bearer env-key").status_code == 200
    assert predict(keyed_client, **{"X-API-Key": "file-key"}).status_code == 200
    assert keyed_client.post("/admin/reload", headers={"X-API-Key": "env-key"}).status_code == 200


def test_probes_metrics_and_the_page_stay_open_by_default(keyed_client) -> None:
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/metrics", "/", "/static/app.js"):
        assert keyed_client.get(path).status_code == 200, path


def test_probes_can_be_protected(trust_models: Path) -> None:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(models_dir=trust_models, api_keys=["k"], protect_probes=True, model_poll_interval_s=0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200


def test_cors_allows_only_configured_origins(keyed_client, trust_client) -> None:
    preflight = {
        "Origin": "https://lab.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = keyed_client.options("/predict/malaria", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://lab.example"
    other = keyed_client.options("/predict/malaria", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # none by default
    assert (
        "access-control-allow-origin"
        not in trust_client.get("/models", headers={"Origin": "https://lab.example"}).headers
    )


def test_an_unreadable_key_file_stops_start_up(tmp_path: Path) -> None:
    from app.api.auth import KeyFileError
    from app.main import create_app
    from app.settings import Settings

    with pytest.raises(KeyFileError, match="cannot read"):
        create_app(Settings(models_dir=tmp_path, api_keys_file=tmp_path / "missing.txt"))

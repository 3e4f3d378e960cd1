from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def test_live_and_ready_once_every_model_has_loaded_or_failed(client) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "models": {"malaria": "ready", "retinopathy": "ready", "pneumonia": "failed"},
    }


def test_not_ready_before_startup_has_run(tmp_path: Path) -> None:
    app = create_app(Settings(models_dir=tmp_path))
    from app.runtime.registry import ModelRegistry

    app.state.registry = ModelRegistry(Settings(models_dir=tmp_path))  # as it is while loading
    response = TestClient(app).get("/health/ready")  # no `with`: the lifespan has not run
    assert response.status_code == 503 and response.json()["status"] == "starting"


def test_an_empty_models_folder_still_starts(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(models_dir=tmp_path))) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/models").json() == {"models": [], "scan_error": None, "modality_check": None}
        assert client.post("/predict/malaria", files={"file": ("x", b"1")}).status_code == 404

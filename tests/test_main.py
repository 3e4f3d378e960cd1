from __future__ import annotations

import gc
import subprocess
import sys

from fastapi import FastAPI

IMPORT_CHECK = """
import sys
import app.main
assert isinstance(app.main.app, __import__("fastapi").FastAPI)
heavy = {"tensorflow", "keras", "training", "sklearn", "matplotlib"}
loaded = [name for name in sys.modules if name.split(".")[0] in heavy]
print(",".join(loaded))
"""


def test_importing_the_app_loads_no_model_framework_and_no_training_code() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_app_factory_wires_every_route(service_settings) -> None:
    from app.main import create_app

    app: FastAPI = create_app(service_settings)
    paths = set(app.openapi()["paths"])
    assert {"/predict/{disease}", "/models", "/models/{disease}", "/health/live", "/health/ready"} <= paths


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/predict/malaria")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_medscan_serve_starts_uvicorn_with_the_settings(monkeypatch) -> None:
    import uvicorn

    from app import cli
    from app.settings import get_settings

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: calls.append((target, kwargs)))
    monkeypatch.setenv("MEDSCAN_PORT", "9123")
    monkeypatch.setenv("MEDSCAN_WORKERS", "3")
    get_settings.cache_clear()
    try:
        assert cli.main(["serve", "--host", "127.0.0.1"]) == 0
    finally:
        get_settings.cache_clear()
    target, kwargs = calls[0]
    assert target == "app.main:app"
    assert (kwargs["host"], kwargs["port"], kwargs["workers"]) == ("127.0.0.1", 9123, 3)


def test_startup_freezes_what_it_loaded(service_settings) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    gc.unfreeze()
    try:
        with TestClient(create_app(service_settings)) as client:
            assert client.get("/health/ready").status_code == 200
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()

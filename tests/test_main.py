from __future__ import annotations

import gc
import subprocess
import sys
import weakref

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


def test_app_factory_wires_every_route(client) -> None:
    """Every router answers at its path (a 404 here means a router was not included)."""
    answered = {
        ("GET", "/models"): 200, ("GET", "/models/malaria"): 200, ("GET", "/health/live"): 200,
        ("GET", "/health/ready"): 200,  # the broken model failed and was reported: ready
        ("POST", "/predict/malaria"): 422, ("POST", "/explain/malaria"): 422,  # no file sent
        ("GET", "/v1/models/malaria"): 200, ("GET", "/v2"): 200, ("GET", "/v2/models/malaria"): 200,
        ("POST", "/admin/reload"): 200, ("GET", "/metrics"): 200, ("GET", "/"): 200, ("GET", "/openapi.json"): 200,
    }  # fmt: skip
    for (method, path), status in answered.items():
        assert client.request(method, path).status_code == status, (method, path)


def test_metrics_false_removes_the_metrics_route(service_settings) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(service_settings.model_copy(update={"metrics": False}))) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/health/live").status_code == 200


def test_a_model_that_fails_during_predict_is_a_500_in_the_error_shape_without_a_trace(trust_models) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.images import gradient, image_bytes

    settings = Settings(models_dir=trust_models, batching=False)  # the model is called as the request runs
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        loaded = client.app.state.registry.get("malaria").loaded

        def broken(batch):
            raise RuntimeError("secret internal detail in /srv/models")

        original = loaded.analyse
        object.__setattr__(loaded, "analyse", broken)
        try:
            response = client.post(
                "/predict/malaria",
                files={"file": ("x.png", image_bytes(gradient()), "image/png")},
                headers={"X-Request-ID": "boom-1"},
            )
        finally:
            object.__setattr__(loaded, "analyse", original)
    assert response.status_code == 500
    assert response.json() == {
        "error": {"status": 500, "code": "internal_error", "message": "internal error; it has been logged"}
    }
    assert response.headers["x-request-id"] == "boom-1"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/predict/malaria")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_medscan_serve_starts_uvicorn_with_the_settings(monkeypatch) -> None:
    import uvicorn

    from app import cli
    from app.api import server
    from app.settings import get_settings

    calls: list[uvicorn.Config] = []
    monkeypatch.setattr(server, "run_workers", calls.append)  # several workers: uvicorn's process manager
    monkeypatch.setenv("MEDSCAN_PORT", "9123")
    monkeypatch.setenv("MEDSCAN_WORKERS", "3")
    monkeypatch.setenv("MEDSCAN_KEEP_ALIVE_S", "30")
    get_settings.cache_clear()
    try:
        assert cli.main(["serve", "--host", "127.0.0.1"]) == 0
    finally:
        get_settings.cache_clear()
    config = calls[0]
    assert config.app == "app.main:app"
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 9123, 3)
    assert config.timeout_keep_alive == 30
    assert config.http == "app.api.http_protocol:GuardedHttpToolsProtocol" and config.limit_concurrency == 1000


def test_startup_freezes_what_it_loaded(service_settings) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    gc.unfreeze()
    try:
        with TestClient(create_app(service_settings)) as client:
            assert client.get("/health/ready").status_code == 200
            # what startup loaded is out of the full collections' scans (a full collection stays short)
            registry = client.app.state.registry
            loaded = [registry, *registry.models.values(), *(s.model for s in registry.models.values() if s.model)]
            scanned = {id(obj) for obj in gc.get_objects()}  # every generation but the frozen one
            assert loaded and [obj for obj in loaded if id(obj) in scanned] == []
    finally:
        gc.unfreeze()


def test_a_stopped_app_frees_its_models(tmp_path, model_factory) -> None:
    """Frozen objects are never collected: an app stopped with its models still frozen kept them for good
    (measured: 850 MB a start and stop of the six shipped models, which took a test process past 8 GB)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    # No broken version here: pytest keeps each log record, and a load error's holds the registry's frame.
    model_factory(tmp_path, "malaria")
    try:
        with TestClient(create_app(Settings(models_dir=tmp_path))) as client:
            models = [weakref.ref(s.model) for s in client.app.state.registry.models.values() if s.model]
        del client
        gc.collect()
        assert models and [ref for ref in models if ref() is not None] == []
    finally:
        gc.unfreeze()

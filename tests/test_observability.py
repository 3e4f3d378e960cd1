"""Request ids, the access log, and Prometheus metrics after real requests."""

from __future__ import annotations

import json
import logging
import re

from tests.images import gradient, image_bytes

PNG = image_bytes(gradient(60, 50))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_request_id_is_echoed_or_made(trust_client) -> None:
    given = trust_client.get("/models", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = trust_client.get("/models").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    hostile = trust_client.get("/models", headers={"X-Request-ID": 'x y"' + "y" * 300})  # replaced, not echoed
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    error = trust_client.post(
        "/predict/cholera", files={"file": ("x.png", PNG, "image/png")}, headers={"X-Request-ID": "err-1"}
    )
    assert error.status_code == 404 and error.headers["x-request-id"] == "err-1"


def test_metrics_count_requests_stages_batches_and_models(trust_client) -> None:
    before = trust_client.get("/metrics").text
    for _ in range(3):
        assert trust_client.post("/predict/malaria", files={"file": ("x.png", PNG, "image/png")}).status_code == 200
    trust_client.post("/predict/malaria", files={"file": ("x.txt", b"text", "text/plain")})
    text = trust_client.get("/metrics").text
    labels = {"model": "malaria", "version": "1", "route": "/predict/{disease}"}
    assert (
        metric(text, "medscan_requests_total", **labels, status="200")
        - metric(before, "medscan_requests_total", **labels, status="200")
        == 3
    )

    def delta(name: str, **where: str) -> float:
        return metric(text, name, **where) - metric(before, name, **where)

    assert delta("medscan_requests_total", **labels, status="415") == 1
    # Every image that reaches the decoder is timed (the text file too); the three images are queued and run.
    assert delta("medscan_stage_duration_seconds_count", model="malaria", stage="preprocessing") == 4
    for stage in ("queue_wait", "model"):
        assert 1 <= delta("medscan_stage_duration_seconds_count", model="malaria", stage=stage) <= 3, stage
    assert 1 <= delta("medscan_batch_size_count", model="malaria") <= 3
    assert delta("medscan_batch_size_sum", model="malaria") == 3  # three images went through the model
    assert delta("medscan_request_duration_seconds_count", route="/predict/{disease}") == 4
    assert metric(text, "medscan_models", state="ready") == 3
    assert metric(text, "medscan_model_versions", model="malaria", version="1", state="ready") == 1
    assert "medscan_queue_depth" in text and "process_resident_memory_bytes" in text
    assert metric(text, "medscan_models_folder_readable") == 1


def test_json_logs_carry_the_request_id_and_no_image_content(trust_models, capfd) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(models_dir=trust_models, log_format="json", model_poll_interval_s=0)
    with TestClient(create_app(settings)) as client:
        client.post(
            "/predict/malaria",
            files={"file": ("secret-name.png", PNG, "image/png")},
            headers={"X-Request-ID": "log-42"},
        )
    logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "medscan.access" and entry["request_id"] == "log-42"]
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["route"] == "/predict/{disease}" and access[0]["version"] == 1
    everything = "\n".join(json.dumps(entry) for entry in lines)
    assert "PNG" not in everything and "secret-name" not in everything  # no content, no file names

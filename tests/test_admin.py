"""POST /admin/reload, and hot reload under load: a client keeps sending while versions come and go."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx

from tests.images import blob, image_bytes
from tests.test_registry import _broken_version


def test_reload_under_load_fails_no_request_and_every_answer_names_its_version(tmp_path: Path, model_factory) -> None:
    from app.main import create_app
    from app.settings import Settings
    from tests.live_server import live_server

    models = tmp_path / "models"
    model_factory(models, "malaria", seed=1)
    settings = Settings(models_dir=models, version_policy="all", model_poll_interval_s=0)
    png = image_bytes(blob(50, infected=True, seed=1))
    # (status, model_version, phase); a transport error is an answer too (status 0), never a silently dead thread
    answers: list[tuple[int, int | None, str]] = []
    phase = ["v1"]
    stop = threading.Event()

    def client_loop(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while not stop.is_set():
                seen = phase[0]
                try:
                    response = client.post("/predict/malaria", files={"file": ("cell.png", png, "image/png")})
                    answers.append((response.status_code, response.json().get("model_version"), seen))
                except (httpx.HTTPError, ValueError) as error:
                    answers.append((0, None, f"{seen}: {type(error).__name__}: {error}"))

    with live_server(create_app(settings)) as base_url:
        clients = [threading.Thread(target=client_loop, args=(base_url,)) for _ in range(4)]
        for thread in clients:
            thread.start()
        with httpx.Client(base_url=base_url, timeout=120) as admin:
            model_factory(models, "malaria", seed=2)  # version 2 appears
            listed = admin.post("/admin/reload").json()["models"][0]
            assert listed["version"] == 2 and [v["version"] for v in listed["versions"]] == [2, 1]
            phase[0] = "v2"
            _broken_version(models, "malaria", 3)  # a broken version 3
            listed = admin.post("/admin/reload").json()["models"][0]
            assert listed["version"] == 2
            assert listed["versions"][0]["version"] == 3 and listed["versions"][0]["status"] == "failed"
            phase[0] = "v3-broken"
            shutil.rmtree(models / "malaria" / "1")  # the old one removed
            listed = admin.post("/admin/reload").json()["models"][0]
            assert [v["version"] for v in listed["versions"]] == [3, 2]
            phase[0] = "v1-removed"
            pinned_gone = admin.post("/predict/malaria?version=1", files={"file": ("c.png", png, "image/png")})
            assert pinned_gone.status_code == 404 and pinned_gone.json()["error"]["code"] == "unknown_version"
            before, deadline = len(answers), time.monotonic() + 60
            while len(answers) < before + 20 and time.monotonic() < deadline:
                threading.Event().wait(0.05)
            assert len(answers) >= before + 20, "the clients stopped answering after the reloads"
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a client thread hung"

    assert len(answers) > 50
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == [], f"requests failed during reload: {failed[:3]}"
    assert {version for _, version, _ in answers} <= {1, 2}
    # once a reload has answered, every later request is served by what it installed
    assert all(version == 2 for _, version, seen in answers if seen in ("v3-broken", "v1-removed"))
    assert any(version == 1 for _, version, _ in answers) and any(version == 2 for _, version, _ in answers)

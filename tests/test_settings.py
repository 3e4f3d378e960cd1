from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import DEFAULT_MODELS_DIR, Settings


def test_defaults_are_the_documented_ones(monkeypatch) -> None:
    for name in ("MEDSCAN_MODELS_DIR", "MEDSCAN_PORT", "MEDSCAN_MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.models_dir == DEFAULT_MODELS_DIR and DEFAULT_MODELS_DIR.name == "models"
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.max_image_pixels == 50_000_000
    assert (settings.port, settings.workers, settings.batching) == (8000, 1, True)


def test_environment_overrides(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDSCAN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("MEDSCAN_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("MEDSCAN_BATCHING", "false")
    settings = Settings(_env_file=None)
    assert settings.models_dir == tmp_path and settings.max_upload_bytes == 1000 and not settings.batching


def test_invalid_values_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("MEDSCAN_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)

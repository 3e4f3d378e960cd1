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


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("MEDSCAN_VERSION_POLICY", "newest", "MEDSCAN_VERSION_POLICY: Input should be"),
        ("MEDSCAN_LOG_FORMAT", "xml", "MEDSCAN_LOG_FORMAT: Input should be 'text' or 'json'"),
        ("MEDSCAN_LOG_LEVEL", "loud", "MEDSCAN_LOG_LEVEL: Input should be"),
        ("MEDSCAN_MAX_BATCH_SIZE", "0", "MEDSCAN_MAX_BATCH_SIZE: Input should be greater than or equal to 1"),
        ("MEDSCAN_PORT", "70000", "MEDSCAN_PORT: Input should be less than or equal to 65535"),
        ("MEDSCAN_API_KEYS", "key-without-brackets", "MEDSCAN_API_KEYS: not valid JSON"),
        ("MEDSCAN_VERSION_POLICY_VERSIONS", '{"malaria": "one"}', "MEDSCAN_VERSION_POLICY_VERSIONS: Input should be"),
        ("MEDSCAN_CORS_ORIGINS", "https://lab.example", "MEDSCAN_CORS_ORIGINS: not valid JSON"),
        ("MEDSCAN_PREVALENCE", '{"retinopathy": 1.0}', "MEDSCAN_PREVALENCE: Input should be less than 1"),
        ("MEDSCAN_PREVALENCE", '{"retinopathy": 0}', "MEDSCAN_PREVALENCE: Input should be greater than 0"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    monkeypatch, capsys, variable: str, value: str, words: str
) -> None:
    from app import cli
    from app.settings import get_settings

    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        assert cli.main(["serve"]) == 2
    finally:
        get_settings.cache_clear()
    error = capsys.readouterr().err
    assert error.startswith("medscan: cannot start: ") and words in error, error


def test_lists_and_mappings_are_read_as_json(monkeypatch) -> None:
    monkeypatch.setenv("MEDSCAN_API_KEYS", '["lab-1", "lab-2"]')
    monkeypatch.setenv("MEDSCAN_VERSION_POLICY_VERSIONS", '{"malaria": [4, 5]}')
    monkeypatch.setenv("MEDSCAN_CORS_ORIGINS", '["https://lab.example"]')
    monkeypatch.setenv("MEDSCAN_PREVALENCE", '{"retinopathy": 0.2}')
    settings = Settings(_env_file=None)
    assert settings.prevalence == {"retinopathy": 0.2}
    assert [key.get_secret_value() for key in settings.api_keys] == ["lab-1", "lab-2"]
    assert settings.version_policy_versions == {"malaria": [4, 5]}
    assert settings.cors_origins == ["https://lab.example"]


def test_the_dicom_routing_table_is_json_in_the_environment(monkeypatch) -> None:
    from app.contract.modality import Modality
    from app.settings import InvalidSettings, get_settings

    monkeypatch.setenv("MEDSCAN_DICOM_ROUTES", '[{"modality": ["CT"], "body_part": ["CHEST"], "kind": "chest_xray"}]')
    get_settings.cache_clear()
    try:
        (rule,) = get_settings().dicom_routes
        assert (rule.modality, rule.body_part, rule.kind) == (["CT"], ["CHEST"], Modality.CHEST_XRAY)
        monkeypatch.setenv("MEDSCAN_DICOM_ROUTES", '[{"modality": ["CT"], "kind": "lung"}]')
        get_settings.cache_clear()
        with pytest.raises(InvalidSettings, match="MEDSCAN_DICOM_ROUTES"):
            get_settings()
    finally:
        get_settings.cache_clear()  # the next test reads its own environment

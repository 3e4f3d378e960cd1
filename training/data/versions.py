"""Which published version a training command works on: the one asked for, or else the newest."""

from __future__ import annotations

from pathlib import Path

from app.contract.model_store import latest_version, version_dir, versions
from training.data.samples import DataError


def published_version(models_dir: Path, disease: str, version: int | None = None) -> Path:
    """The folder of `version` of `disease` (default: its newest); a clear error naming what there is."""
    version = version or latest_version(models_dir, disease)
    if version is None or version not in versions(models_dir, disease):
        found = ", ".join(map(str, versions(models_dir, disease))) or "none"
        raise DataError(f"no version {version or ''} of {disease} under {models_dir} (versions: {found})")
    return version_dir(models_dir, disease, version)

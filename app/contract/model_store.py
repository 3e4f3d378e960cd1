"""The models folder layout, TensorFlow Serving style: `<models>/<disease>/<integer version>/`.

Each version folder is a SavedModel (saved_model.pb, variables/) with `metadata.json` (the model
card) and `report/` (evaluation JSON and plots) beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

METADATA_FILE = "metadata.json"
REPORT_DIR = "report"
DISEASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def is_disease_name(name: str) -> bool:
    """Names are plain lower-case identifiers, so one can never walk the file system."""
    return bool(DISEASE_NAME.fullmatch(name))


def is_version_name(name: str) -> bool:
    """A version folder's name, or a version in a URL: ASCII digits (str.isdigit() alone takes '¹', which int()
    refuses)."""
    return name.isascii() and name.isdigit()


def disease_names(models_dir: Path, *, strict: bool = False) -> list[str]:
    """The disease folders. strict: a models folder that is missing or unreadable raises OSError
    (the service keeps what it serves) instead of reading as empty."""
    if not strict and not models_dir.is_dir():
        return []
    return sorted(entry.name for entry in models_dir.iterdir() if entry.is_dir() and is_disease_name(entry.name))


def versions(models_dir: Path, disease: str) -> list[int]:
    folder = models_dir / disease
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(entry.name) for entry in entries if entry.is_dir() and is_version_name(entry.name))


def latest_version(models_dir: Path, disease: str) -> int | None:
    found = versions(models_dir, disease)
    return found[-1] if found else None


def next_version(models_dir: Path, disease: str) -> int:
    return (latest_version(models_dir, disease) or 0) + 1


def version_dir(models_dir: Path, disease: str, version: int) -> Path:
    return models_dir / disease / str(version)


def latest_version_dir(models_dir: Path, disease: str) -> Path:
    version = latest_version(models_dir, disease)
    if version is None:
        raise FileNotFoundError(f"no version of {disease} in {models_dir}")
    return version_dir(models_dir, disease, version)

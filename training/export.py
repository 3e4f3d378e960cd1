"""Atomic export of a trained model as `<models>/<disease>/<N>/` (never overwriting a version)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras

from app.model_store import next_version, version_dir


def export_version(
    model: keras.Model, models_dir: Path, disease: str, *,
    write_extras: Callable[[Path, int], None],
) -> Path:
    """Write the SavedModel and its extras into a hidden temporary folder, then rename it to the next
    free version. `write_extras(folder, version)` writes metadata.json and report/ into the folder.
    A crash leaves only a hidden temp folder that the service ignores; an existing version is never touched."""
    parent = models_dir / disease
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a served model must be readable by the service user
        model.export(str(staging / "savedmodel"), format="tf_saved_model", verbose=False)
        for item in (staging / "savedmodel").iterdir():
            item.rename(staging / item.name)
        (staging / "savedmodel").rmdir()
        while True:
            version = next_version(models_dir, disease)
            write_extras(staging, version)
            target = version_dir(models_dir, disease, version)
            if target.exists():  # someone else took it between the check and now
                continue
            try:
                staging.rename(target)
                return target
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


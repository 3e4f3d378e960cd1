"""Atomic export of a model version as `<models>/<disease>/<N>/` (never overwriting a version).

Everything is written into a hidden staging folder that the service ignores; `publish` gives it the
next free version number, writes the finished card and renames it into place in one step. A crash
leaves at most the hidden folder, which is removed on the way out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.contract.model_card import ModelCard, write_card
from app.contract.model_store import METADATA_FILE, next_version, version_dir


class StagedVersion:
    def __init__(self, models_dir: Path, disease: str, folder: Path) -> None:
        self.models_dir = models_dir
        self.disease = disease
        self.folder = folder  # write the SavedModel, the card and report/ here
        self.published: Path | None = None

    def publish(self, card: ModelCard) -> Path:
        """Number the version, write its card and move it into place; returns the version folder."""
        while True:
            version = next_version(self.models_dir, self.disease)
            write_card(card.model_copy(update={"version": version}), self.folder / METADATA_FILE)
            target = version_dir(self.models_dir, self.disease, version)
            if target.exists():  # someone else took it between the check and now
                continue
            try:
                self.folder.rename(target)
            except OSError:
                if not target.exists():
                    raise
                continue
            self.published = target
            return target


@contextmanager
def stage_version(models_dir: Path, disease: str) -> Iterator[StagedVersion]:
    parent = models_dir / disease
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=parent))
    folder.chmod(0o755)  # mkdtemp makes it private; a served model must be readable by the service user
    staged = StagedVersion(models_dir, disease, folder)
    try:
        yield staged
    finally:
        if staged.published is None:
            shutil.rmtree(folder, ignore_errors=True)

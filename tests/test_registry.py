from __future__ import annotations

import shutil
from pathlib import Path

from app.registry import ModelRegistry, ModelStatus
from app.settings import Settings


async def test_latest_version_is_loaded_and_bad_folders_are_reported(served_models_dir: Path, tmp_path: Path,
                                                                      model_factory) -> None:
    models = tmp_path / "models"
    shutil.copytree(served_models_dir / "malaria", models / "malaria")
    second = model_factory(models, "malaria", size=48)  # version 2, a different input size
    (models / "brain_tumor" / "3").mkdir(parents=True)  # a version folder with nothing in it
    (models / "breast_cancer").mkdir()  # no version at all
    wrong = model_factory(models, "retinopathy")
    (models / "pneumonia").mkdir()
    shutil.move(wrong, models / "pneumonia" / "1")  # a card that names another disease
    shutil.rmtree(models / "retinopathy")

    registry = ModelRegistry(Settings(models_dir=models))
    await registry.load_all()
    try:
        assert registry.ready
        assert set(registry.models) == {"malaria", "brain_tumor", "breast_cancer", "pneumonia"}
        statuses = {name: (m.status, m.version, m.error) for name, m in registry.models.items()}
        assert statuses["malaria"][:2] == (ModelStatus.READY, 2)
        assert second.name == "2" and registry.models["malaria"].card.input.height == 48
        assert statuses["brain_tumor"][0] is ModelStatus.FAILED and "metadata.json is missing" in statuses["brain_tumor"][2]
        assert statuses["breast_cancer"][0] is ModelStatus.FAILED and "no integer version" in statuses["breast_cancer"][2]
        assert statuses["pneumonia"][0] is ModelStatus.FAILED and "'retinopathy'" in statuses["pneumonia"][2]
    finally:
        await registry.close()


async def test_an_unexpected_failure_in_one_model_leaves_the_others_served(served_models_dir: Path, monkeypatch) -> None:
    import app.registry as registry_module

    real_load = registry_module.load_model

    def flaky(path: Path):
        if path.parent.name == "retinopathy":
            raise PermissionError(13, "Permission denied", str(path / "metadata.json"))
        return real_load(path)

    monkeypatch.setattr(registry_module, "load_model", flaky)
    registry = ModelRegistry(Settings(models_dir=served_models_dir))
    await registry.load_all()
    try:
        assert registry.ready
        assert registry.models["malaria"].status is ModelStatus.READY
        assert registry.models["retinopathy"].status is ModelStatus.FAILED
        assert "Permission denied" in registry.models["retinopathy"].error
    finally:
        await registry.close()

from __future__ import annotations

from pathlib import Path

import pytest

from app.contract.model_store import disease_names, is_disease_name, latest_version, next_version, version_dir, versions


def test_versions_are_integer_folders_sorted_numerically(tmp_path: Path) -> None:
    for name in ("1", "10", "2", ".incomplete-x", "notes", "\u00b2"):  # '²' passes str.isdigit(), not int()
        (tmp_path / "malaria" / name).mkdir(parents=True)
    assert versions(tmp_path, "malaria") == [1, 2, 10]
    assert latest_version(tmp_path, "malaria") == 10
    assert next_version(tmp_path, "malaria") == 11
    assert version_dir(tmp_path, "malaria", 3) == tmp_path / "malaria" / "3"


def test_a_new_disease_starts_at_version_1(tmp_path: Path) -> None:
    assert latest_version(tmp_path, "pneumonia") is None
    assert next_version(tmp_path, "pneumonia") == 1


def test_disease_names_skip_hidden_and_odd_folders(tmp_path: Path) -> None:
    for name in ("malaria", "brain_tumor", ".cache", "Bad-Name"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("x")
    assert disease_names(tmp_path) == ["brain_tumor", "malaria"]
    assert disease_names(tmp_path / "missing") == []


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "", "Malaria", "x" * 65, "malaria\x00"])
def test_names_that_could_reach_the_file_system_are_refused(name: str) -> None:
    assert not is_disease_name(name)

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATASETS, needs_shared_data, write_synthetic_dataset
from training.data.samples import DataError, check_trainable, class_counts, find_samples, fixed_sample, split_by_group


def test_samples_carry_labels_and_manifest_groups(synthetic_data: Path) -> None:
    samples = find_samples(synthetic_data, "malaria")
    assert class_counts(samples) == {"infected": 24, "uninfected": 24}
    assert {s.group for s in samples if s.label == 0} == {f"patient-0-{i}" for i in range(8)}


def test_without_a_manifest_each_file_is_its_own_group(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path, manifest=False)
    samples = find_samples(root, "malaria")
    assert len({s.group for s in samples}) == len(samples)


def test_split_is_deterministic_and_leaks_no_group(synthetic_data: Path) -> None:
    samples = find_samples(synthetic_data, "malaria")
    first, second = split_by_group(samples, seed=7), split_by_group(samples, seed=7)
    assert first == second
    groups = {part: {s.group for s in items} for part, items in first.parts().items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert sum(len(items) for items in first.parts().values()) == len(samples)
    check_trainable(first)  # every part has both classes
    assert split_by_group(samples, seed=8) != first


def test_split_fractions_follow_the_paper(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path, per_class=200, per_group=1)
    split = split_by_group(find_samples(root, "malaria"))
    assert len(split.test) == pytest.approx(0.15 * 400, abs=2)
    assert len(split.validation) == pytest.approx(0.3 * 340, abs=2)
    # Stratified: each part keeps the 1:1 class balance.
    for items in split.parts().values():
        counts = class_counts(items)
        assert abs(counts["infected"] - counts["uninfected"]) <= 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "no folder"),
        (
            lambda root: write_synthetic_dataset(root) and shutil.rmtree(root / "malaria" / "uninfected"),
            "missing class folder",
        ),
        (
            lambda root: [(root / "malaria" / c).mkdir(parents=True) for c in ("infected", "uninfected")],
            "has no images",
        ),
    ],
    ids=["no disease folder", "one class only", "empty class folder"],
)
def test_bad_folders_give_clear_errors(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        find_samples(tmp_path, "malaria")


def test_too_few_groups_for_a_split_is_reported(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path, per_class=3, per_group=3)
    with pytest.raises(DataError, match="part has no"):
        check_trainable(split_by_group(find_samples(root, "malaria")))


@needs_shared_data
def test_real_malaria_split_keeps_every_slide_on_one_side() -> None:
    split = split_by_group(find_samples(SHARED_DATASETS, "malaria"))
    slides = {part: {s.group for s in items} for part, items in split.parts().items()}
    assert not slides["train"] & slides["test"] and not slides["validation"] & slides["test"]
    assert not slides["train"] & slides["validation"]
    assert len(slides["test"]) > 10


def test_a_fixed_sample_is_spread_over_the_list_and_never_longer_than_asked() -> None:
    items = list(range(10))
    assert fixed_sample(items, 3) == [0, 3, 6]
    assert fixed_sample(items, 4) == [0, 2, 4, 6]
    assert fixed_sample(items, 10) == fixed_sample(items, 50) == items
    assert fixed_sample([], 5) == []

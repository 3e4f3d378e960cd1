"""Finding the labelled images and splitting them by patient/slide group.

The train/validation/test split is our own, not scikit-learn's `GroupShuffleSplit`, on purpose: every shipped
card names its test part by this algorithm and the numbers of its `SplitSpec`, so another algorithm would
silently change which patients an old model's test part holds. Cross-validation folds, which no card pins,
come from scikit-learn's `StratifiedGroupKFold` (`training/experiments/crossval.py`).
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.contract.model_card import CLASS_NAMES, ModelCard, SplitSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"})
MANIFEST_FILE = "MANIFEST.csv"


class DataError(Exception):
    """The data folder cannot be trained on; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into CLASS_NAMES
    group: str
    # The number a label rule read the label from (e.g. an ICDR grade); None where labels are the class folders.
    level: float | None = None


@dataclass(frozen=True)
class LabelRule:
    """Labels read from the manifest instead of the class folders: the images of `images_from`'s folders (both
    of them), labelled infected where the number that `pattern` finds in `column` is at least `infected_from`.
    For example referable retinopathy: grade >= 2 of the any-grade retinopathy images."""

    images_from: str
    pattern: str  # a regular expression whose first group is the number, e.g. "ICDR grade (\\d)"
    infected_from: float
    column: str = "note"

    def level_of(self, row: dict[str, str] | None, key: str) -> float:
        """The number one manifest row's label is read from."""
        found = re.search(self.pattern, (row or {}).get(self.column) or "")
        if found is None:
            raise DataError(
                f"{key}: no {self.pattern!r} in the {self.column!r} column of {MANIFEST_FILE}, so its "
                "label cannot be read"
            )
        return float(found.group(1))

    def label_of(self, level: float) -> int:
        """The class index of a level."""
        return CLASS_NAMES.index("infected") if level >= self.infected_from else CLASS_NAMES.index("uninfected")


@dataclass(frozen=True)
class Split:
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]

    def parts(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def find_samples(data_dir: Path, disease: str, labels: LabelRule | None = None) -> list[Sample]:
    """All images under <data>/<disease>/{infected,uninfected}/, with their groups; with a label rule, the
    images of its folders labelled from the manifest instead."""
    folder = labels.images_from if labels else disease
    disease_dir = data_dir / folder
    if not disease_dir.is_dir():
        raise DataError(f"no folder {disease_dir}: expected {disease_dir}/{{infected,uninfected}}/")
    manifest = read_manifest(data_dir)
    if labels and not manifest:
        raise DataError(f"{disease}'s labels come from {data_dir / MANIFEST_FILE}, which is missing")
    samples: list[Sample] = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = disease_dir / class_name
        if not class_dir.is_dir():
            raise DataError(f"missing class folder {class_dir}")
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {class_dir} has no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            key = f"{folder}/{class_name}/{path.name}"
            row = manifest.get(key)
            # Without a manifest entry a file is its own group.
            group = (row or {}).get("group") or f"file:{key}"
            if labels:
                level = labels.level_of(row, key)
                samples.append(Sample(path=path, label=labels.label_of(level), group=group, level=level))
            else:
                samples.append(Sample(path=path, label=label, group=group))
    return samples


def manifest_notes(data_dir: Path, samples: list[Sample]) -> list[str]:
    """Each sample's manifest note ("" where it has none), e.g. to report figures per grade."""
    manifest = read_manifest(data_dir)
    return [(manifest.get("/".join(s.path.parts[-3:])) or {}).get("note", "") for s in samples]


def diseases_in(data_dir: Path) -> list[str]:
    """The data sets a folder holds: every <disease>/ with infected/ and uninfected/ inside."""
    found = (
        sorted(
            entry.name
            for entry in data_dir.iterdir()
            if (entry / "infected").is_dir() and (entry / "uninfected").is_dir()
        )
        if data_dir.is_dir()
        else []
    )
    if not found:
        raise DataError(f"{data_dir} holds no <disease>/infected/ and <disease>/uninfected/ folders")
    return found


def read_manifest(data_dir: Path) -> dict[str, dict[str, str]]:
    """MANIFEST.csv's rows by path (<disease>/<class>/<file>); empty where there is no manifest."""
    manifest = data_dir / MANIFEST_FILE
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle) if row.get("path")}


def split_by_group(
    samples: list[Sample],
    *,
    test_fraction: float = 0.15,
    validation_fraction: float = 0.3,
    seed: int = 42,
) -> Split:
    """Deterministic group split: test first, then validation as a fraction of the rest.

    Groups are shuffled with the seed within strata of their majority class, so each part keeps
    roughly the class balance, and no group is ever on two sides.
    """
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_group[sample.group].append(sample)
    ordered = _stratified_group_order(by_group, seed)
    test_groups, rest = _take(ordered, by_group, test_fraction)
    validation_groups, remaining = _take(rest, by_group, validation_fraction)
    train_groups = [group for groups in remaining.values() for group in groups]

    def collect(groups: list[str]) -> list[Sample]:
        return sorted((s for g in groups for s in by_group[g]), key=lambda s: str(s.path))

    return Split(train=collect(train_groups), validation=collect(validation_groups), test=collect(test_groups))


def split_as(samples: list[Sample], spec: SplitSpec) -> Split:
    """The split a card describes."""
    return split_by_group(
        samples, test_fraction=spec.test_fraction, validation_fraction=spec.validation_fraction, seed=spec.seed
    )


def card_split_spec(card: ModelCard) -> SplitSpec:
    """The split a card was trained on; cards before format 2 used the defaults and the training seed."""
    if "split_spec" in card.data.model_fields_set:
        return card.data.split_spec
    return SplitSpec(seed=card.training.seed)


def _stratified_group_order(by_group: dict[str, list[Sample]], seed: int) -> dict[int, list[str]]:
    strata: dict[int, list[str]] = defaultdict(list)
    for group in sorted(by_group):
        majority = Counter(s.label for s in by_group[group]).most_common(1)[0][0]
        strata[majority].append(group)
    rng = random.Random(seed)
    for label in sorted(strata):
        rng.shuffle(strata[label])
    return strata


def _take(
    strata: dict[int, list[str]],
    by_group: dict[str, list[Sample]],
    fraction: float,
) -> tuple[list[str], dict[int, list[str]]]:
    """Take groups from the front of each stratum until `fraction` of its images are taken."""
    taken: list[str] = []
    rest: dict[int, list[str]] = {}
    for label, groups in strata.items():
        target = fraction * sum(len(by_group[g]) for g in groups)
        count = 0
        cut = 0
        while cut < len(groups) - 1 and count + len(by_group[groups[cut]]) / 2 <= target:
            count += len(by_group[groups[cut]])
            cut += 1
        taken += groups[:cut]
        rest[label] = groups[cut:]
    return taken, rest


def class_counts(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(s.label for s in samples)
    return {name: counts.get(index, 0) for index, name in enumerate(CLASS_NAMES)}


def check_trainable(split: Split) -> None:
    for part, samples in split.parts().items():
        counts = class_counts(samples)
        missing = [name for name, n in counts.items() if n == 0]
        if missing:
            raise DataError(
                f"the {part} part has no {' or '.join(missing)} images: need more images or groups per class"
            )


T = TypeVar("T")


def fixed_sample(items: list[T], limit: int) -> list[T]:
    """At most `limit` items spread over the list, every k-th: the same ones on every run."""
    return items[:: max(1, len(items) // limit)][:limit]

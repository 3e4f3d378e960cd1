"""Every answer a version's card figures were measured on, kept in its report: each test image's log-odds and
distance, and each image the out-of-distribution check had to flag. The shipped-model tests recompute the card's
figures from them and answer a sample of the same images again, which must give the same answers: as strong a
check as answering every image, at a fraction of the cost (a 512 px fundus ensemble answers ~1 image a second)."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.contract.model_card import FlagRate, ModelCard, OperatingPoint, TestMetrics
from app.contract.model_store import REPORT_DIR
from app.contract.scoring import calibrated_probability
from training.data.samples import DataError, Sample
from training.evaluation.metrics import compute_metrics, operating_point, probabilities_of

ANSWERS_FILE = "answers.csv.gz"  # gzip: a malaria release keeps ~5,700 answers; the models share a 100 MB budget
OWN_TEST = "own test part"
_FIELDS = ("set", "image", "label", "log_odds", "ood_distance", "colour_picture")


@dataclass(frozen=True)
class AnswerSet:
    """A set's images (paths under the data folder, or names) and how the version answered each."""

    images: list[str]
    log_odds: np.ndarray
    ood_distance: np.ndarray | None
    colour_picture: np.ndarray  # bool: flagged as a colour picture sent to a gray-modality model
    labels: np.ndarray | None = None  # the own test part's

    def __post_init__(self) -> None:
        sizes = {len(self.images), len(self.log_odds), len(self.colour_picture)}
        sizes |= {len(column) for column in (self.ood_distance, self.labels) if column is not None}
        if len(sizes) != 1:
            raise ValueError(f"an answer set's columns differ in length: {sorted(sizes)}")

    def flagged(self, threshold: float) -> np.ndarray:
        assert self.ood_distance is not None
        return (self.ood_distance > threshold) | self.colour_picture


def image_names(samples: list[Sample], data_dir: Path | None) -> list[str]:
    """How a kept answer names its image: the file's path under the data folder, as the manifest does."""
    return [s.path.relative_to(data_dir).as_posix() if data_dir else s.path.name for s in samples]


def answers_path(version_folder: Path) -> Path:
    return version_folder / REPORT_DIR / ANSWERS_FILE


def write_answers(path: Path, sets: dict[str, AnswerSet]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_FIELDS)
    for name, answers in sets.items():
        for index, image in enumerate(answers.images):
            writer.writerow(
                (
                    name,
                    image,
                    "" if answers.labels is None else int(answers.labels[index]),
                    f"{answers.log_odds[index]:.6g}",
                    "" if answers.ood_distance is None else f"{answers.ood_distance[index]:.7g}",
                    int(answers.colour_picture[index]),
                )
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same answers make the same bytes
    path.write_bytes(gzip.compress(text.getvalue().encode("utf-8"), compresslevel=9, mtime=0))


def read_answers(path: Path) -> dict[str, AnswerSet]:
    if not path.is_file():
        raise DataError(f"no kept answers at {path}: re-measure the version with `evaluate --write`")
    rows: dict[str, list[dict[str, str]]] = {}
    for row in csv.DictReader(io.StringIO(gzip.decompress(path.read_bytes()).decode("utf-8"))):
        rows.setdefault(row["set"], []).append(row)
    return {name: _answer_set(chunk) for name, chunk in rows.items()}


def _answer_set(rows: list[dict[str, str]]) -> AnswerSet:
    def column(field: str, dtype: type) -> np.ndarray | None:
        values = [row[field] for row in rows]
        return None if "" in values else np.array(values, dtype=dtype)

    return AnswerSet(
        images=[row["image"] for row in rows],
        log_odds=np.array([row["log_odds"] for row in rows], dtype=np.float64),
        ood_distance=column("ood_distance", np.float64),
        colour_picture=np.array([row["colour_picture"] == "1" for row in rows], dtype=bool),
        labels=column("label", np.int64),
    )


def flag_rates(sets: dict[str, AnswerSet], threshold: float, targets: dict[str, str]) -> dict[str, FlagRate]:
    """Share of each set the out-of-distribution check flags, as the service flags."""
    return {
        name: FlagRate(
            n_images=len(answers.images),
            flagged=float(np.mean(answers.flagged(threshold))),
            target=targets.get(name, ""),
        )
        for name, answers in sets.items()
    }


@dataclass(frozen=True)
class KeptFigures:
    """A card's test-part figures, recomputed from its kept answers."""

    metrics: TestMetrics
    screening: OperatingPoint | None
    flagged: dict[str, FlagRate]


def figures_from_answers(card: ModelCard, sets: dict[str, AnswerSet]) -> KeptFigures:
    own = sets[OWN_TEST]
    assert own.labels is not None
    uncalibrated = calibrated_probability(own.log_odds, 1.0)
    screening = None
    if card.screening:
        calibrated = calibrated_probability(own.log_odds, *card.calibration_parameters())
        screening = operating_point(calibrated, own.labels, card.screening.threshold)
    ood = card.out_of_distribution
    flagged = {}
    if ood is not None and ood.flagged:
        flagged = flag_rates(sets, ood.threshold, {name: rate.target for name, rate in ood.flagged.items()})
    return KeptFigures(compute_metrics(own.labels, probabilities_of(uncalibrated)), screening, flagged)

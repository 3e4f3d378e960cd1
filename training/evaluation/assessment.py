"""Measuring an exported version as the service runs it: test metrics with intervals, calibration,
the screening threshold's operating point, and how often the out-of-distribution check fires on
the model's own test images and on images it must refuse (other diseases, photographs, noise, blank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import bootstrap

from app.contract.model_card import (
    CalibrationFigures,
    FlagRate,
    ModelCard,
    OperatingPoint,
    SplitSpec,
    TestMetrics,
)
from app.contract.model_store import REPORT_DIR
from app.contract.preprocessing import ColourMode, InputSpec, decode, is_colour_picture, scale, to_pixels
from app.contract.savedmodel import ImageOutputs, LoadedModel
from app.contract.scoring import calibrated_probability
from training.data.pipeline import decode_samples, kept_samples, pixels_of
from training.data.samples import DataError, Sample, find_samples, fixed_sample, split_as
from training.evaluation.answers import OWN_TEST, AnswerSet, answers_path, flag_rates, image_names, write_answers
from training.evaluation.metrics import (
    ECE_BINS,
    INFECTED,
    INTERVAL_METRICS,
    brier_score,
    calibrated_ece_floor,
    compute_metrics,
    expected_calibration_error,
    operating_point,
    probabilities_of,
    resampled_metrics,
    write_report,
)

BATCH = 128
# 4.2 M: 4 images of 512 px under four views, all 128 of 96 px. At 16.8 M the 512 px referable model's test part took
# 4.7 GB resident (now 2.3 GB) and ran no faster.
MAX_BATCH_PIXELS = 1 << 22
# Natural photographs that scikit-image ships (no download): people, animals, objects, text, textures.
PHOTOGRAPHS = (
    "astronaut",
    "camera",
    "cat",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "moon",
    "coins",
    "clock",
    "grass",
    "gravel",
    "brick",
    "page",
    "text",
    "stereo_motorcycle",
)
PHOTOGRAPHS_KEY = "natural photographs (skimage.data)"
NOISE_KEY = "noise and blank images"


@dataclass(frozen=True)
class Probe:
    """Images the out-of-distribution check must flag, prepared at the model's input, and which of them the
    service flags before any distance: colour pictures sent to a gray-modality model (app.contract.preprocessing)."""

    pixels: np.ndarray
    colour_picture: np.ndarray  # bool per image
    images: list[str]  # how the kept answers name each (answers.image_names, or a made-up name)

    @classmethod
    def of(cls, images: dict[str, Image.Image], spec: InputSpec) -> Probe:
        return cls(
            pixels=np.stack([to_pixels(image, spec) for image in images.values()]),
            colour_picture=np.array([colour_picture_for(image, spec) for image in images.values()], dtype=bool),
            images=list(images),
        )


def colour_picture_for(image: Image.Image, spec: InputSpec) -> bool:
    return spec.colour_mode is ColourMode.GRAYSCALE and is_colour_picture(image)


def colour_pictures_in_files(samples: list[Sample], spec: InputSpec) -> np.ndarray:
    """Which files the service would call colour pictures for this model (none for a colour model)."""
    if spec.colour_mode is not ColourMode.GRAYSCALE:
        return np.zeros(len(samples), dtype=bool)
    return np.array([decode(s.path.read_bytes(), spec, max_pixels=10**9).colour_source for s in samples], dtype=bool)


@dataclass(frozen=True)
class Outputs:
    log_odds: np.ndarray
    ood_distance: np.ndarray | None


def batch_for(card: ModelCard) -> int:
    """Images per call, bounded in pixels over every test-time view as the service bounds its batches: 128
    images of 448 px under four flips (205 M pixels in one call) crashed TensorFlow inside the SavedModel."""
    return card.batch_within(MAX_BATCH_PIXELS, BATCH)


def run_model(model: LoadedModel, pixels: np.ndarray) -> Outputs:
    """uint8 N x H x W x C -> the served model's outputs, in batches."""
    rows: list[ImageOutputs] = []
    batch = batch_for(model.card)
    for start in range(0, len(pixels), batch):
        rows += model.analyse(scale(pixels[start : start + batch]))
    distances = [row.ood_distance for row in rows]
    return Outputs(
        log_odds=np.array([row.log_odds for row in rows]),
        ood_distance=None if None in distances else np.array(distances, dtype=np.float64),
    )


def calibration_figures(
    log_odds: np.ndarray, labels: np.ndarray, calibration: tuple[float, float]
) -> CalibrationFigures:
    """ECE and Brier before and after the (temperature, bias) calibration."""
    before = calibrated_probability(log_odds, 1.0)
    after = calibrated_probability(log_odds, *calibration)
    return CalibrationFigures(
        n_images=len(labels),
        bins=ECE_BINS,
        ece_before=expected_calibration_error(before, labels),
        ece_after=expected_calibration_error(after, labels),
        ece_floor=calibrated_ece_floor(after),
        brier_before=brier_score(before, labels),
        brier_after=brier_score(after, labels),
    )


def group_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: list[str],
    threshold: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals of each metric, resampling patient groups (not images),
    since images of one patient are not independent."""
    group_ids = {name: index for index, name in enumerate(sorted(set(groups)))}
    image_groups = np.array([group_ids[group] for group in groups], dtype=np.int64)
    positive = labels == INFECTED

    def statistic(chosen: np.ndarray, axis: int = -1) -> np.ndarray:
        # Each resample as how often it drew each group: every resample's metrics in one array operation
        # (one compute_metrics call per resample was 1.7 s of every export).
        drawn = np.atleast_2d(chosen)
        counts = np.zeros((len(drawn), len(group_ids)))
        np.add.at(counts, (np.arange(len(drawn))[:, None], drawn), 1.0)
        values = resampled_metrics(positive, probabilities[:, INFECTED], counts[:, image_groups], threshold)
        return np.stack([values[name] for name in INTERVAL_METRICS]).reshape(len(INTERVAL_METRICS), *chosen.shape[:-1])

    result = bootstrap(
        (np.arange(len(group_ids)),),
        statistic,
        vectorized=True,
        n_resamples=resamples,
        batch=100,  # resamples x images weights at a time: 100 x 4,000 images is 3 MB
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    # A metric some resample could not compute (no image of one class: tiny test parts) gets no interval.
    return {
        name: (float(lo), float(hi))
        for name, lo, hi in zip(INTERVAL_METRICS, low, high, strict=True)
        if np.isfinite(lo) and np.isfinite(hi)
    }


def photographs(spec: InputSpec) -> Probe:
    """scikit-image's natural photographs, prepared as the service prepares an upload."""
    import skimage.data

    images = {}
    for name in PHOTOGRAPHS:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # stereo pairs: the left view
            array = array[0]
        images[f"skimage.data.{name}"] = Image.fromarray(np.asarray(array))
    return Probe.of(images, spec)


def noise_and_blank(spec: InputSpec, seed: int = 0) -> Probe:
    """Uniform and Gaussian noise (colour and grey) and flat images from black to white."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (300, 300, 3), dtype=np.uint8) for _ in range(4)]
    arrays += [rng.integers(0, 256, (224, 224), dtype=np.uint8) for _ in range(2)]
    arrays += [np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8) for _ in range(2)]
    arrays += [np.full((200, 200), level, np.uint8) for level in (0, 64, 128, 192, 255)]
    arrays += [np.full((200, 200, 3), colour, np.uint8) for colour in ((255, 0, 0), (0, 0, 255))]
    return Probe.of({f"noise or blank {index}": Image.fromarray(array) for index, array in enumerate(arrays)}, spec)


def probe_answers(model: LoadedModel, probes: dict[str, Probe]) -> dict[str, AnswerSet]:
    """How the model answers each image its out-of-distribution check must flag (none without the check)."""
    if model.card.out_of_distribution is None:
        return {}
    answers = {}
    for name, probe in probes.items():
        outputs = run_model(model, probe.pixels)
        answers[name] = AnswerSet(probe.images, outputs.log_odds, outputs.ood_distance, probe.colour_picture)
    return answers


def ood_flags(model: LoadedModel, answers: dict[str, AnswerSet]) -> dict[str, FlagRate]:
    """Share flagged on the model's own test part (target <= 5%) and on each probe set (>= 95%, 100%), as the
    service flags: by the distance, or, for a gray-modality model, because the image is a colour picture. (No
    image of a gray modality's own data is one: COLOUR_PICTURE_CHROMA's measurements.)"""
    ood = model.card.out_of_distribution
    if ood is None or answers[OWN_TEST].ood_distance is None:
        return {}
    targets = {name: ">= 95%" for name in answers} | {OWN_TEST: "<= 5%", NOISE_KEY: "100%"}
    return flag_rates(answers, ood.threshold, targets)


def _point_with_intervals(
    probabilities: np.ndarray, labels: np.ndarray, groups: list[str], threshold: float
) -> OperatingPoint:
    intervals = group_intervals(labels, probabilities_of(probabilities), groups, threshold=threshold)
    return operating_point(probabilities, labels, threshold).model_copy(
        update={
            "intervals": {name: bounds for name, bounds in intervals.items() if name in ("sensitivity", "specificity")}
        }
    )


@dataclass(frozen=True)
class Assessment:
    metrics: TestMetrics
    calibration: CalibrationFigures | None
    screening_test: OperatingPoint | None
    screening_test_at_0_5: OperatingPoint | None
    ood_flagged: dict[str, FlagRate]
    uncalibrated: np.ndarray  # P(infected) per test image, temperature 1
    calibrated: np.ndarray
    answers: dict[str, AnswerSet]  # every answer the figures were measured on, kept in the report

    @property
    def labels(self) -> np.ndarray:
        labels = self.answers[OWN_TEST].labels
        assert labels is not None
        return labels

    @property
    def log_odds(self) -> np.ndarray:
        return self.answers[OWN_TEST].log_odds


def assess(
    model: LoadedModel,
    test_pixels: np.ndarray,
    test_labels: np.ndarray,
    test_groups: list[str],
    probes: dict[str, Probe],
    test_images: list[str],
) -> Assessment:
    card = model.card
    outputs = run_model(model, test_pixels)
    own = AnswerSet(
        test_images, outputs.log_odds, outputs.ood_distance, np.zeros(len(test_labels), dtype=bool), test_labels
    )
    answers = {OWN_TEST: own, **probe_answers(model, probes)}
    calibration = card.calibration_parameters()
    uncalibrated = calibrated_probability(outputs.log_odds, 1.0)
    calibrated = calibrated_probability(outputs.log_odds, *calibration)
    metrics = compute_metrics(test_labels, probabilities_of(uncalibrated))
    metrics = metrics.model_copy(
        update={"intervals": group_intervals(test_labels, probabilities_of(uncalibrated), test_groups)}
    )
    return Assessment(
        metrics=metrics,
        calibration=calibration_figures(outputs.log_odds, test_labels, calibration) if card.calibration else None,
        screening_test=(
            _point_with_intervals(calibrated, test_labels, test_groups, card.screening.threshold)
            if card.screening
            else None
        ),
        screening_test_at_0_5=(
            _point_with_intervals(calibrated, test_labels, test_groups, 0.5) if card.screening else None
        ),
        ood_flagged=ood_flags(model, answers),
        uncalibrated=uncalibrated,
        calibrated=calibrated,
        answers=answers,
    )


# Images of each other disease a release measures its out-of-distribution flags on: the flag rates' 95% interval
# is then within +-1.4 points; a slow model may take fewer (`--probe-limit`), the card's n_images says how many.
PROBE_LIMIT = 1000


def other_disease_key(disease: str) -> str:
    return f"{disease} test part"


def probe_sets(
    data_dir: Path, disease: str, spec: InputSpec, known: list[str], limit: int = PROBE_LIMIT
) -> dict[str, Probe]:
    """What the out-of-distribution check must flag, prepared at this model's input: the test part of
    every other disease found in `data_dir` (a fixed sample of at most `limit`), photographs, noise."""
    probes: dict[str, Probe] = {}
    for other in known:
        if other == disease or not (data_dir / other).is_dir():
            continue
        try:
            test = split_as(find_samples(data_dir, other), SplitSpec()).test
        except DataError:
            continue
        test = fixed_sample(test, limit)
        decoded = decode_samples(test, spec)
        if decoded.size:
            kept = kept_samples(test, decoded)
            probes[other_disease_key(other)] = Probe(
                pixels_of(decoded), colour_pictures_in_files(kept, spec), image_names(kept, data_dir)
            )
    probes[PHOTOGRAPHS_KEY] = photographs(spec)
    probes[NOISE_KEY] = noise_and_blank(spec)
    return probes


def with_assessment(card: ModelCard, assessment: Assessment) -> ModelCard:
    update: dict[str, object] = {"metrics": assessment.metrics}
    if card.calibration and assessment.calibration:
        update["calibration"] = card.calibration.model_copy(update={"test": assessment.calibration})
    if card.screening:
        update["screening"] = card.screening.model_copy(
            update={"test": assessment.screening_test, "test_at_0_5": assessment.screening_test_at_0_5}
        )
    if card.out_of_distribution:
        update["out_of_distribution"] = card.out_of_distribution.model_copy(update={"flagged": assessment.ood_flagged})
    return card.model_copy(update=update)


def write_assessment_report(
    folder: Path, card: ModelCard, assessment: Assessment, history: dict[str, list[float]] | None
) -> None:
    write_report(
        folder / REPORT_DIR,
        disease=card.disease,
        labels=assessment.labels,
        probabilities=probabilities_of(assessment.uncalibrated),
        metrics=assessment.metrics,
        history=history,
        calibrated=assessment.calibrated,
        extra={
            "calibration": card.calibration.model_dump() if card.calibration else None,
            "screening": card.screening.model_dump() if card.screening else None,
            "out_of_distribution": card.out_of_distribution.model_dump() if card.out_of_distribution else None,
        },
    )
    write_answers(answers_path(folder), assessment.answers)

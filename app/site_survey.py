"""`medscan estimate-prevalence <disease> <folder>`: a site's share of disease from its own unlabelled images.

Every image in the folder goes through the served model as a request would (the same decoding, the same
calibration); the images the out-of-distribution check flags are left out, since the estimate assumes
that only the share of disease differs from the training sites. What remains gives the site's prevalence
by Saerens' expectation-maximisation (app/prevalence.py), to set as MEDSCAN_SITE_PREVALENCE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.image_errors import ImageError
from app.inference import in_distribution
from app.model_store import latest_version, version_dir
from app.preprocessing import decode, scale
from app.prevalence import estimate_prevalence
from app.savedmodel import LoadedModel, load_model
from app.scoring import calibrated_probability

BATCH = 64
MAX_PIXELS = 50_000_000


class SurveyError(Exception):
    """No model to ask, or no usable image to ask it about."""


@dataclass(frozen=True)
class Survey:
    disease: str
    version: int
    images: int  # usable and in distribution: what the estimate rests on
    unreadable: int
    out_of_distribution: int
    calibrated_at: float
    estimated: float

    def setting(self) -> str:
        return f"MEDSCAN_SITE_PREVALENCE='{json.dumps({self.disease: round(self.estimated, 3)})}'"


def survey(models_dir: Path, disease: str, folder: Path, version: int | None = None) -> Survey:
    version = version or latest_version(models_dir, disease)
    if version is None:
        raise SurveyError(f"no version of the {disease} model in {models_dir}")
    model = load_model(version_dir(models_dir, disease, version))
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    if not files:
        raise SurveyError(f"{folder}: no files to read")
    pixels, colour_sources, unreadable = [], [], 0
    spec = model.card.input.spec()
    for path in files:
        try:
            image = decode(path.read_bytes(), spec, max_pixels=MAX_PIXELS)
        except ImageError:
            unreadable += 1
            continue
        pixels.append(image.pixels)
        colour_sources.append(image.colour_source)
    if not pixels:
        raise SurveyError(f"{folder}: none of its {len(files)} files is an image the service can read")
    probabilities, kept = answers(model, np.stack(pixels), colour_sources)
    if not kept.any():
        raise SurveyError(f"{folder}: every image is out of distribution for the {disease} model")
    calibrated_at = model.card.calibrated_prevalence()
    return Survey(
        disease=disease,
        version=version,
        images=int(kept.sum()),
        unreadable=unreadable,
        out_of_distribution=int((~kept).sum()),
        calibrated_at=calibrated_at,
        estimated=estimate_prevalence(probabilities[kept], calibrated_at),
    )


def answers(model: LoadedModel, pixels: np.ndarray, colour_sources: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated P(infected), in distribution) per image, as the service answers them."""
    outputs = [
        row for start in range(0, len(pixels), BATCH) for row in model.analyse(scale(pixels[start : start + BATCH]))
    ]
    ood = model.card.out_of_distribution
    probabilities = calibrated_probability(
        np.array([o.log_odds for o in outputs]), *model.card.calibration_parameters()
    )
    kept = np.array([in_distribution(o, ood, colour) is not False for o, colour in zip(outputs, colour_sources)])
    return probabilities, kept

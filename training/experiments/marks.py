"""`python -m training marks <disease>`: does a version read burned-in marks (calipers, text) instead of tissue?

Some ultrasound images carry the sonographer's calipers (`+`) and text burned into the pixels, more often on
the lesions that were measured, which are more often malignant: a shortcut a network can learn. For every
test image this finds thin bright marks (a white top-hat: bright structures narrower than 7 px, near white),
paints them out (OpenCV's Telea inpainting from the surrounding tissue) and asks the version again. A model
that reads the tissue barely moves; one that reads the marks changes its answers and loses AUC without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from app.contract.model_card import BurnedInMarks, replace_card
from app.contract.model_store import METADATA_FILE
from app.contract.preprocessing import InputSpec, load_first_frame, read_header, to_pixels
from app.contract.scoring import calibrated_probability
from training.data.config import describe_disease, samples_of, sites_of
from training.data.samples import Sample, card_split_spec, manifest_notes, split_as
from training.evaluation.assessment import run_model
from training.evaluation.metrics import compute_metrics, probabilities_of
from training.evaluation.run import load_version

TOPHAT_SIZE = 5  # px: the strokes of calipers and letters are thinner than this, lesion edges are not
MIN_BRIGHTNESS = 120  # marks are drawn light gray to white
MIN_TOPHAT = 50  # and stand out this much above what surrounds them
MAX_MARK_SIDE = 14  # px: a letter or a `+` fits in this box; brighter tissue streaks run longer
MIN_MARKED_PIXELS = 12  # fewer such pixels than this: speckle, not a mark
METHOD = (
    f"marks: pixels >= {MIN_BRIGHTNESS} whose white top-hat ({TOPHAT_SIZE}x{TOPHAT_SIZE}) is >= {MIN_TOPHAT}, "
    f"in connected pieces no larger than {MAX_MARK_SIDE}x{MAX_MARK_SIDE} px (letters, calipers), grown by 1 px; "
    f"an image has marks with >= {MIN_MARKED_PIXELS} such pixels; painted out with OpenCV's Telea inpainting "
    "(radius 3) at the image's own resolution, then prepared as the service prepares it"
)


def mark_mask(gray: np.ndarray) -> np.ndarray:
    """uint8 H x W -> bool mask of small, thin, bright burned-in marks."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (TOPHAT_SIZE, TOPHAT_SIZE))
    tophat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel)
    candidates = ((gray >= MIN_BRIGHTNESS) & (tophat >= MIN_TOPHAT)).astype(np.uint8)
    count, pieces, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    small = np.zeros(count, bool)
    small[1:] = (
        (stats[1:, cv2.CC_STAT_WIDTH] <= MAX_MARK_SIDE)
        & (stats[1:, cv2.CC_STAT_HEIGHT] <= MAX_MARK_SIDE)
        & (stats[1:, cv2.CC_STAT_AREA] >= 3)
    )
    mask = small[pieces].astype(np.uint8)
    return cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool)


def paint_out(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cv2.inpaint(gray, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


@dataclass(frozen=True)
class PaintedOut:
    """Each test image as the model is fed it, with and without its burned-in marks."""

    as_is: np.ndarray
    painted: np.ndarray
    labels: np.ndarray
    marked: np.ndarray  # bool: enough marked pixels to count as marked
    marked_share: list[float]


def paint_out_marks(test: list[Sample], spec: InputSpec) -> PaintedOut:
    as_is, painted, marked, marked_share = [], [], [], []
    for sample in test:
        image = load_first_frame(read_header(sample.path.read_bytes(), max_pixels=10**8))
        gray = np.asarray(image.convert("L"))
        mask = mark_mask(gray)
        has_marks = int(mask.sum()) >= MIN_MARKED_PIXELS
        cleaned = Image.fromarray(paint_out(gray, mask)) if has_marks else image
        as_is.append(to_pixels(image, spec))
        painted.append(to_pixels(cleaned, spec))
        marked.append(has_marks)
        marked_share.append(float(mask.mean()))
    labels = np.array([sample.label for sample in test])
    return PaintedOut(np.stack(as_is), np.stack(painted), labels, np.array(marked), marked_share)


def _figures(
    members: np.ndarray, images: PaintedOut, before: np.ndarray, after: np.ndarray, threshold: float, classes: list[str]
) -> dict[str, Any]:
    chosen = members & images.marked
    labels = images.labels

    def auc(probabilities: np.ndarray) -> float | None:
        if len(set(labels[members].tolist())) < 2:
            return None
        return compute_metrics(labels[members], probabilities_of(probabilities[members])).roc_auc

    return {
        "images": int(members.sum()),
        "with_marks": int(chosen.sum()),
        "with_marks_by_class": {name: int(chosen[labels == index].sum()) for index, name in enumerate(classes)},
        "mean_abs_change": float(np.abs(after - before)[chosen].mean()) if chosen.any() else 0.0,
        "flipped_at_screening_threshold": int(np.sum(((before >= threshold) != (after >= threshold))[members])),
        "roc_auc_as_is": auc(before),
        "roc_auc_painted_out": auc(after),
    }


def marks_check(
    disease: str,
    *,
    data_dir: Path,
    models_dir: Path,
    version: int | None = None,
    report_dir: Path | None = None,
    write: bool = False,
) -> dict[str, Any]:
    model = load_version(disease, models_dir, version)
    card = model.card
    config = describe_disease(disease, data_dir)
    test = split_as(samples_of(config, data_dir), card_split_spec(card)).test
    images = paint_out_marks(test, card.input.spec())
    calibration = card.calibration_parameters()
    threshold = card.screening.threshold if card.screening else 0.5
    before = calibrated_probability(run_model(model, images.as_is).log_odds, *calibration)
    after = calibrated_probability(run_model(model, images.painted).log_odds, *calibration)

    def figures(members: np.ndarray) -> dict[str, Any]:
        return _figures(members, images, before, after, threshold, card.classes)

    marked, marked_share = images.marked.tolist(), images.marked_share
    sites = sites_of(test, manifest_notes(data_dir, test), config.sites) if config.sites else ["all"] * len(test)
    result = {
        "disease": disease,
        "version": card.version,
        "method": METHOD,
        **figures(np.ones(len(images.labels), bool)),
        "mean_marked_area": float(np.mean([a for a, m in zip(marked_share, marked) if m])) if any(marked) else 0.0,
        # A site without burned-in marks is the control: there only speckle is painted out.
        "by_site": {site: figures(np.array([s == site for s in sites])) for site in dict.fromkeys(sites)},
    }
    if report_dir is not None:
        (report_dir / disease).mkdir(parents=True, exist_ok=True)
        path = report_dir / disease / "marks.json"
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        result["report"] = str(path)
    if write:
        replace_card(
            card.model_copy(update={"burned_in_marks": BurnedInMarks.model_validate(result)}),
            model.path / METADATA_FILE,
        )
    return result

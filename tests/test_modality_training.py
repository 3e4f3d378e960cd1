"""Fitting the modality check: its images, its synthetic 'anything else', its head, and the whole command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.contract.modality import Modality
from tests.conftest import write_synthetic_dataset
from training.modality.check import (
    Features,
    KindHead,
    ModalityOptions,
    camera_frame,
    fit_head,
    measure,
    recognised,
    run,
)
from training.modality.data import KindImage, known_kinds
from training.modality.synthetic import MAKERS, synthetic_images


def test_synthetic_images_vary_and_repeat_by_seed():
    images = synthetic_images(2 * len(MAKERS), seed=3)
    assert len(images) == 12 and all(64 <= side < 640 for image in images for side in image.size)
    assert len({image.size for image in images}) > 6
    again = synthetic_images(2 * len(MAKERS), seed=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True))


def test_a_camera_frame_is_3_to_2_with_the_image_whole_in_the_middle():
    square = Image.new("RGB", (200, 200), (200, 100, 50))
    frame = camera_frame(square)
    assert frame.size == (300, 200)
    pixels = np.asarray(frame)
    assert pixels[:, :50].max() == 0 and pixels[:, 250:].max() == 0 and (pixels[:, 50:250] == (200, 100, 50)).all()
    wide = Image.new("L", (400, 100))
    assert camera_frame(wide).size == (400, 100)


def test_the_kinds_are_the_built_in_diseases_and_other_last():
    kinds = known_kinds()
    assert kinds[-1] is Modality.OTHER and len(kinds) == len(set(kinds)) == 6


def toy_features(rng: np.random.Generator, centres: dict[Modality, float], per_kind: int) -> Features:
    images, rows = [], []
    for kind, centre in centres.items():
        images += [KindImage(kind, f"synthetic:{kind}:{i}" if kind is Modality.OTHER else f"{kind}-{i}.png")
                   for i in range(per_kind)]  # fmt: skip
        rows.append(rng.normal(centre, 0.3, (per_kind, 4)))
    plain = np.concatenate(rows)
    return Features(images, plain, plain + rng.normal(0, 0.05, plain.shape))


def test_a_head_fitted_on_separable_kinds_recognises_them_and_refuses_the_others():
    rng = np.random.default_rng(0)
    centres = {Modality.CHEST_XRAY: -2.0, Modality.BRAIN_MRI: 0.0, Modality.OTHER: 2.0}
    classes = list(centres)
    head = fit_head(toy_features(rng, centres, 60), classes, seed=0)
    assert isinstance(head, KindHead)
    measured = toy_features(rng, centres, 30)
    probabilities = head.probabilities(measured.plain)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    figures = measure(head, measured)
    assert figures["chest_xray"]["own_recognised"] == 1.0
    assert figures["chest_xray"]["others_refused"]["brain_mri"] == 1.0
    assert figures["brain_mri"]["others_refused"]["synthetic"] == 1.0
    assert not recognised(head, measured.plain[:1], Modality.OTHER)[0]


@pytest.mark.slow  # runs EfficientNet-Lite0 over ~150 images and exports the check
def test_the_command_fits_measures_and_exports_a_check_the_service_loads(tmp_path: Path):
    from app.runtime.modality_check import load_modality_check

    data = tmp_path / "data"
    write_synthetic_dataset(data, "malaria", per_class=16)
    write_synthetic_dataset(data, "pneumonia", per_class=16)
    options = ModalityOptions(
        data_dir=data, models_dir=tmp_path / "models", report=tmp_path / "modality.json", per_kind=20,
        measure_per_kind=10, synthetic_fit=12, synthetic_measure=6,
    )  # fmt: skip
    result = run(options)
    assert result["fit_images"]["blood_smear_cell"] > 0 and result["fit_images"]["chest_xray"] > 0
    assert result["fit_images"]["other"] == 12 + 8  # synthetic images and the photographs to fit on
    assert (tmp_path / "modality.json").is_file()
    check = load_modality_check(tmp_path / "models")
    assert (
        check is not None
        and check.card.version == 1
        and check.card.classes == [Modality.CHEST_XRAY, Modality.BLOOD_SMEAR_CELL, Modality.OTHER]
    )
    answers = check.answers(np.zeros((2, 224, 224, 3), np.uint8), Modality.CHEST_XRAY)
    assert len(answers) == 2 and 0.0 <= answers[0].probability <= 1.0

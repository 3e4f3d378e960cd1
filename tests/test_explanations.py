from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.runtime.explanations import OVERLAY_MAX_SIDE, class_heatmap, colourise, overlay, png_bytes


def test_each_class_sees_its_own_evidence_scaled_to_0_1() -> None:
    signed = np.array([[2.0, -1.0], [0.5, 0.0]])
    infected, uninfected = class_heatmap(signed, 0), class_heatmap(signed, 1)
    np.testing.assert_allclose(infected, [[1.0, 0.0], [0.25, 0.0]])
    np.testing.assert_allclose(uninfected, [[0.0, 1.0], [0.0, 0.0]])
    assert not class_heatmap(np.full((3, 3), -1.0), 0).any()  # no evidence: all zero, not NaN


def test_colours_run_from_cold_to_hot() -> None:
    colours = colourise(np.array([[0.0, 1.0]])).astype(int)
    assert colours[0, 0, 2] > colours[0, 0, 0] and colours[0, 1, 0] > colours[0, 1, 2]


def test_the_overlay_keeps_the_image_shape_within_the_size_cap() -> None:
    heatmap = np.zeros((8, 8))
    heatmap[:4, :4] = 1.0
    small = Image.open(io.BytesIO(png_bytes(overlay(Image.new("L", (120, 60), 128), heatmap))))
    assert small.format == "PNG" and small.size == (120, 60)
    pixels = np.asarray(small.convert("RGB")).astype(int)
    assert pixels[5, 5, 0] > pixels[55, 115, 0]  # hot top-left, cold bottom-right
    large = overlay(Image.new("RGB", (2000, 1000)), heatmap)
    assert large.size == (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE // 2)


def test_the_heatmap_covers_only_the_region_the_model_saw() -> None:
    heatmap = np.ones((8, 8))  # evidence everywhere the model looked
    image = Image.new("RGB", (2000, 1000), (128, 128, 128))
    drawn = np.asarray(overlay(image, heatmap, region=(1000, 0, 2000, 1000))).astype(int)  # the right half
    assert drawn.shape == (OVERLAY_MAX_SIDE // 2, OVERLAY_MAX_SIDE, 3)
    assert np.all(drawn[:, : OVERLAY_MAX_SIDE // 2 - 1] == 128)  # left half untouched
    assert np.all(drawn[:, OVERLAY_MAX_SIDE // 2 + 1 :, 1] < 100)  # right half coloured by the map


def test_a_fundus_model_sees_the_disc_and_its_heatmap_lands_there() -> None:
    from app.contract.preprocessing import ColourMode, Enhancement, InputSpec, model_region
    from tests.test_fundus import fundus_photo

    photo = fundus_photo(300, 240, box=(60, 20, 260, 220))
    assert model_region(photo, InputSpec(48, 48, ColourMode.RGB)) == (0, 0, 300, 240)
    left, top, right, bottom = model_region(photo, InputSpec(48, 48, ColourMode.RGB, Enhancement.FUNDUS))
    assert abs(left - 60) <= 3 and abs(right - 261) <= 3 and abs(top - 20) <= 3 and abs(bottom - 221) <= 3

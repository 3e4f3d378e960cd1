"""The site-shift signal and the colour warning in answers: where an image's out-of-distribution distance falls
among the validation part's, and a gray image sent to a colour model."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.contract.site_shift import (
    PERCENTILES,
    distance_percentile,
    distance_quantiles,
    unlike_training_sites,
    with_threshold,
)
from app.main import create_app
from app.settings import Settings
from tests.images import blob, gradient, image_bytes

NEAR = [i * 1e-6 for i in range(len(PERCENTILES))]  # every real distance lies beyond these: percentile 100
FAR = [1e5 + i for i in range(len(PERCENTILES))]  # and below these: percentile 0


@pytest.fixture(scope="module")
def site_client(tmp_path_factory: pytest.TempPathFactory):
    from tests.model_fixtures import export_untrained

    models = tmp_path_factory.mktemp("site-models")
    export_untrained(models, "malaria", colour_mode="rgb", size=50, validation_quantiles=NEAR)
    export_untrained(models, "retinopathy", colour_mode="rgb", size=50, validation_quantiles=FAR)
    export_untrained(models, "pneumonia", colour_mode="grayscale", size=50)  # a card without quantiles
    with TestClient(create_app(Settings(models_dir=models)), raise_server_exceptions=False) as client:
        yield client


def predict(client: TestClient, disease: str, image: Image.Image) -> dict:
    response = client.post(f"/predict/{disease}", files={"file": ("x.png", image_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def test_percentiles_interpolate_between_the_kept_quantiles() -> None:
    quantiles = distance_quantiles(np.arange(101, dtype=np.float64))  # distances 0..100: percentile = distance
    assert quantiles[0] == 0 and quantiles[-1] == 100 and len(quantiles) == 21
    assert distance_percentile(42.5, quantiles) == pytest.approx(42.5)
    assert distance_percentile(-1, quantiles) == 0 and distance_percentile(1e9, quantiles) == 100
    assert unlike_training_sites(90.5) and not unlike_training_sites(90.0)


def test_an_image_further_than_the_training_sites_images_is_marked_but_still_answered(site_client) -> None:
    body = predict(site_client, "malaria", gradient(60, 60))
    assert body["in_distribution"] is True and body["label"] in {"infected", "uninfected"}
    assert body["out_of_distribution"]["distance_percentile"] == 100
    assert body["out_of_distribution"]["unlike_training_sites"] is True
    assert "unlike most images of the sites" in body["warning"] and "do not trust" not in body["warning"]


def test_an_image_like_the_training_sites_images_has_no_site_warning(site_client) -> None:
    body = predict(site_client, "retinopathy", gradient(60, 60))
    assert body["out_of_distribution"]["distance_percentile"] == 0
    assert body["out_of_distribution"]["unlike_training_sites"] is False and body["warning"] is None


def test_a_card_without_quantiles_gives_no_site_signal(site_client) -> None:
    body = predict(site_client, "pneumonia", gradient(60, 60, "L"))
    assert body["out_of_distribution"]["distance_percentile"] is None
    assert body["out_of_distribution"]["unlike_training_sites"] is None and body["warning"] is None


@pytest.mark.parametrize(
    "image",
    [
        blob(60, infected=True, seed=1).convert("L"),  # a gray PNG
        blob(60, infected=True, seed=1),
    ],  # gray pixels saved as RGB
    ids=["L", "gray-RGB"],
)
def test_a_gray_image_sent_to_a_colour_model_is_answered_with_a_warning(site_client, image: Image.Image) -> None:
    body = predict(site_client, "retinopathy", image)
    assert body["label"] in {"infected", "uninfected"}
    assert "made from its gray copy" in body["warning"]


def test_a_colour_image_gets_no_colour_warning_and_a_gray_model_never_does(site_client) -> None:
    assert predict(site_client, "retinopathy", gradient(60, 60))["warning"] is None
    assert predict(site_client, "pneumonia", blob(60, infected=True, seed=1).convert("L"))["warning"] is None


def test_an_image_beyond_the_out_of_distribution_threshold_is_placed_beyond_its_percentile() -> None:
    """One odd validation image made the largest kept distance huge: without the threshold as a knot, an image
    flagged out of distribution (distance 3x the threshold) was answered as percentile 95.00009."""
    quantiles = [*np.linspace(12.0, 27.8, 19).tolist(), 30.5, 3_472_951.75]  # pneumonia v4's card, in shape
    threshold = 32.9  # its 97.5th percentile
    flagged = distance_percentile(93.5, *with_threshold(quantiles, threshold, 97.5))
    assert 97.5 < flagged < 100 and distance_percentile(93.5, quantiles) < 95.01
    assert distance_percentile(threshold, *with_threshold(quantiles, threshold, 97.5)) == pytest.approx(97.5)
    for distance in (5.0, 20.0, 29.0):  # below the kept quantile under the threshold nothing moves
        knotted = distance_percentile(distance, *with_threshold(quantiles, threshold, 97.5))
        assert knotted == pytest.approx(distance_percentile(distance, quantiles))
    # a threshold out of line with the kept quantiles, or at a kept percentile, leaves them as they are
    assert with_threshold(quantiles, 1e9, 97.5) == (quantiles, list(PERCENTILES))
    assert with_threshold(quantiles, 29.0, 95.0) == (quantiles, list(PERCENTILES))


def test_the_percentile_is_numpys_interpolation_ties_and_both_ends_included() -> None:
    from app.contract.site_shift import PERCENTILES, distance_percentile

    rng = np.random.default_rng(0)
    for trial in range(200):
        quantiles = np.sort(rng.gamma(2.0, 5.0, len(PERCENTILES)))
        if trial % 4 == 0:
            quantiles[3:7] = quantiles[3]  # several kept quantiles alike, as a small validation part gives
        kept = [float(q) for q in quantiles]
        for distance in [*rng.uniform(-5, 60, 10), kept[0], kept[3], kept[-1]]:
            expected = float(np.interp(distance, kept, PERCENTILES))
            assert distance_percentile(float(distance), kept) == pytest.approx(expected, abs=1e-9)

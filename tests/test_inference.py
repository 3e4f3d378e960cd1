"""The inference pipeline as callers see it: calibration, threshold, out-of-distribution flag, Grad-CAM,
several images per request, DICOM, and versions exported before the trust layer."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from app.api.schemas import ImageError, PredictionItem, Predictions
from app.contract.savedmodel import load_model
from app.contract.scoring import calibrated_probability
from tests.conftest import BIAS, TEMPERATURE, THRESHOLD
from tests.images import gradient, image_bytes, model_input


def post(client, disease: str, *files: tuple[str, bytes, str], **params):
    return client.post(f"/predict/{disease}", files=[("file", f) for f in files], params=params)


def png(width: int = 60, height: int = 40, name: str = "x.png") -> tuple[str, bytes, str]:
    return (name, image_bytes(gradient(width, height, "L")), "image/png")  # gray, as the gray models' images are


def expected_score(models: Path, disease: str, data: bytes) -> float:
    model = load_model(next((models / disease).iterdir()))
    x = model_input(data, model.card.input.spec(), max_pixels=10**8)[np.newaxis]
    return float(calibrated_probability(model.analyse(x)[0].log_odds, *model.card.calibration.parameters()))


def test_answers_are_calibrated_thresholded_and_carry_the_unrounded_score(trust_client, trust_models) -> None:
    name, data, kind = png()
    body = post(trust_client, "malaria", (name, data, kind)).json()
    assert body["score"] == pytest.approx(expected_score(trust_models, "malaria", data), abs=1e-9)
    assert body["probabilities"]["infected"] == round(body["score"] * 100, 2)
    assert sum(body["probabilities"].values()) == pytest.approx(100.0, abs=1e-9)
    assert body["threshold"] == THRESHOLD
    assert body["label"] == ("infected" if body["score"] >= THRESHOLD else "uninfected")
    assert body["in_distribution"] is True and body["warning"] is None
    assert body["out_of_distribution"]["threshold"] == 1e6
    assert body["model_version"] == 1 and body["intended_use"] == "research use only; not for diagnosis"


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_a_request_can_override_the_threshold(trust_client, threshold: float) -> None:
    body = post(trust_client, "malaria", png(), threshold=threshold).json()
    assert body["threshold"] == threshold
    assert body["label"] == ("infected" if body["score"] >= threshold else "uninfected")


@pytest.mark.parametrize(
    ("threshold", "code"),
    [
        ("1.5", "invalid_threshold"),
        ("-0.1", "invalid_threshold"),
        ("nan", "invalid_threshold"),
        ("high", "invalid_request"),
    ],  # fmt: skip
)
def test_a_threshold_outside_0_to_1_is_422(trust_client, threshold: str, code: str) -> None:
    # a number is the pipeline's to judge (the same check every door uses); a word never reaches it
    response = post(trust_client, "malaria", png(), threshold=threshold)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code and "threshold" in response.json()["error"]["message"]


def moved(probability: float, shift: float) -> float:
    return float(1 / (1 + np.exp(-(np.log(probability / (1 - probability)) + shift))))


@pytest.mark.parametrize("prevalence", [0.05, 0.9])
def test_a_clinics_prevalence_moves_the_score_by_bayes_rule_and_the_threshold_with_it(
    trust_client, prevalence: float
) -> None:
    plain = post(trust_client, "malaria", png()).json()
    assert plain["prevalence"] == 0.5  # the fixture's validation part: one image of each class
    body = post(trust_client, "malaria", png(), prevalence=prevalence).json()
    shift = np.log(prevalence / (1 - prevalence))  # logit(clinic) - logit(0.5)
    assert body["prevalence"] == prevalence
    assert body["score"] == pytest.approx(moved(plain["score"], shift), abs=1e-9)
    assert body["threshold"] == pytest.approx(moved(THRESHOLD, shift), abs=1e-9)
    assert body["label"] == plain["label"]  # the screening cut moved with the answers: same sensitivity
    explicit = post(trust_client, "malaria", png(), prevalence=prevalence, threshold=0.5).json()
    assert explicit["threshold"] == 0.5 and explicit["label"] == ("infected" if body["score"] >= 0.5 else "uninfected")
    v2 = {
        "parameters": {"prevalence": prevalence},
        "inputs": [
            {"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png()[1]).decode()]}
        ],
    }
    answer = trust_client.post("/v2/models/malaria/infer", json=v2).json()
    score = next(output for output in answer["outputs"] if output["name"] == "score")["data"][0]
    assert score == pytest.approx(body["score"], abs=1e-9)


@pytest.mark.parametrize(
    ("prevalence", "status", "code"),
    [("0", 422, "invalid_prevalence"), ("1", 422, "invalid_prevalence"), ("nan", 422, "invalid_prevalence"),
     ("-0.2", 422, "invalid_prevalence"), ("half", 422, "invalid_request")],
)  # fmt: skip
def test_a_prevalence_that_is_not_a_share_strictly_between_0_and_1_is_422(
    trust_client, prevalence: str, status: int, code: str
) -> None:
    response = post(trust_client, "malaria", png(), prevalence=prevalence)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert "prevalence" in response.json()["error"]["message"]


def test_a_version_that_does_not_record_its_calibrations_prevalence_refuses_one_with_409(trust_client) -> None:
    assert post(trust_client, "breast_cancer", png()).json()["prevalence"] is None  # exported before the trust layer
    response = post(trust_client, "breast_cancer", png(), prevalence=0.2)
    assert response.status_code == 409 and response.json()["error"]["code"] == "prevalence_unavailable"


def test_the_deployments_prevalence_applies_where_a_request_gives_none(trust_models) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(models_dir=trust_models, prevalence={"malaria": 0.2})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        deployed = post(client, "malaria", png()).json()
        asked = post(client, "malaria", png(), prevalence=0.7).json()
        assert deployed["prevalence"] == 0.2 and asked["prevalence"] == 0.7
        assert post(client, "brain_tumor", png()).json()["prevalence"] == 0.5  # another disease: its calibration's
    assert deployed["score"] == pytest.approx(moved(asked["score"], np.log(0.2 / 0.8) - np.log(0.7 / 0.3)), abs=1e-9)


def test_an_image_unlike_the_training_data_is_flagged_but_still_answered(trust_client) -> None:
    body = post(trust_client, "brain_tumor", png()).json()
    assert body["in_distribution"] is False
    assert body["label"] in {"infected", "uninfected"} and body["probabilities"]
    assert "do not trust its label" in body["warning"] and "brain_tumor" in body["warning"]
    assert body["out_of_distribution"]["distance"] > body["out_of_distribution"]["threshold"] == 0.0


def test_a_colour_picture_sent_to_a_gray_modality_model_is_out_of_distribution_whatever_its_distance(
    trust_client,
) -> None:
    photograph = ("fundus.jpg", image_bytes(gradient(300, 200), "JPEG"), "image/jpeg")  # colour throughout
    # malaria's fixture is a gray model whose distance threshold (1e6) lets every image through.
    body = post(trust_client, "malaria", photograph).json()
    assert body["in_distribution"] is False and body["label"] in {"infected", "uninfected"}
    assert "colour picture" in body["warning"] and "do not trust its label" in body["warning"]
    assert body["out_of_distribution"]["distance"] < body["out_of_distribution"]["threshold"]
    # Without out-of-distribution statistics too: the rule needs none.
    legacy = post(trust_client, "breast_cancer", photograph).json()
    assert legacy["in_distribution"] is False and "colour picture" in legacy["warning"]


def test_a_version_without_the_trust_layer_still_serves_and_says_so(trust_client) -> None:
    body = post(trust_client, "breast_cancer", png()).json()
    assert body["in_distribution"] is None and body["out_of_distribution"] is None
    assert body["threshold"] == 0.5
    response = post(trust_client, "breast_cancer", png(), explain="true")
    assert response.status_code == 409 and response.json()["error"]["code"] == "explanation_unavailable"


def test_the_image_size_is_the_size_as_sent_even_when_jpeg_decodes_smaller(trust_client) -> None:
    jpeg = image_bytes(gradient(224, 224), "JPEG")
    body = post(trust_client, "malaria", ("x.jpg", jpeg, "image/jpeg")).json()
    assert body["image"] == {"width": 224, "height": 224}
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: width and height swap
    rotated = image_bytes(gradient(300, 200), "JPEG", exif=exif)
    assert post(trust_client, "malaria", ("r.jpg", rotated, "image/jpeg")).json()["image"] == {
        "width": 200,
        "height": 300,
    }


def test_several_images_give_results_in_order_with_an_error_in_place_of_a_bad_one(trust_client, trust_models) -> None:
    batcher = trust_client.app.state.registry.models["malaria"].batcher
    batches_before, images_before = batcher.batches_run, batcher.images_run
    first, third = png(30, 20, "a.png"), png(90, 70, "c.png")
    response = post(trust_client, "malaria", first, ("b.txt", b"not an image", "text/plain"), third)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # the answer is built without pydantic (app/api/routes/predict.py): it must still be what OpenAPI documents
    parsed = Predictions.model_validate(response.json()).results
    assert [type(r) for r in parsed] == [PredictionItem, ImageError, PredictionItem]
    assert set(results[0]) == set(PredictionItem.model_fields) and set(results[1]) == set(ImageError.model_fields)
    assert [r["filename"] for r in results] == ["a.png", "b.txt", "c.png"]
    assert results[0]["image"] == {"width": 30, "height": 20} and results[2]["image"] == {"width": 90, "height": 70}
    assert results[1] == {
        "error": {
            "status": 415,
            "code": "unsupported_media_type",
            "message": "the file is not an image in a supported format",
        },
        "filename": "b.txt",
    }
    assert results[2]["score"] == pytest.approx(expected_score(trust_models, "malaria", third[1]), abs=1e-9)
    # the two usable images went through the model together
    assert (batcher.batches_run - batches_before, batcher.images_run - images_before) == (1, 2)


def test_more_images_than_allowed_is_413(trust_client) -> None:
    response = post(trust_client, "malaria", *[png() for _ in range(5)])
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_images"


def test_explain_adds_a_heatmap_at_input_resolution_and_a_png_overlay(trust_client) -> None:
    body = post(trust_client, "malaria", png(120, 80), explain="true").json()
    explanation = body["explanation"]
    heatmap = np.array(explanation["heatmap"])
    assert heatmap.shape == (50, 50) and heatmap.min() >= 0 and heatmap.max() <= 1
    assert explanation["target_class"] == body["label"]
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (120, 80)
    jpeg = post(
        trust_client, "malaria", ("big.jpg", image_bytes(gradient(400, 300), "JPEG"), "image/jpeg"), explain="true"
    )
    big = Image.open(io.BytesIO(base64.b64decode(jpeg.json()["explanation"]["overlay_png"])))
    assert big.size == (400, 300)  # drawn on the image as sent, not on a reduced JPEG decode
    plain = post(trust_client, "malaria", png(120, 80)).json()
    assert "explanation" not in plain or plain["explanation"] is None
    assert plain["score"] == body["score"]


def test_explain_route_returns_the_overlay_as_png(trust_client) -> None:
    response = trust_client.post("/explain/malaria", files={"file": png(64, 64)})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    answer = post(trust_client, "malaria", png(64, 64)).json()
    assert response.headers["x-medscan-label"] == answer["label"]
    assert float(response.headers["x-medscan-score"]) == pytest.approx(answer["score"], abs=1e-6)
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)
    bad = trust_client.post("/explain/malaria", files={"file": ("x.txt", b"text", "text/plain")})
    assert bad.status_code == 415
    pinned = trust_client.post("/explain/malaria?version=1", files={"file": png(64, 64)})
    assert pinned.status_code == 200 and pinned.headers["x-medscan-model-version"] == "1"
    missing = trust_client.post("/explain/malaria?version=9", files={"file": png(64, 64)})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_version"


def test_explain_is_409_for_a_version_without_grad_cam(trust_client) -> None:
    response = trust_client.post("/explain/breast_cancer", files={"file": png(64, 64)})  # exported before Grad-CAM
    assert response.status_code == 409, response.text
    assert "no Grad-CAM" in response.json()["error"]["message"]


def test_dicom_is_screened_and_no_patient_data_is_returned_or_logged(trust_client, caplog) -> None:
    path = get_testdata_file("CT_small.dcm")
    patient = str(pydicom.dcmread(path).PatientName)
    assert patient
    caplog.set_level(logging.DEBUG)
    response = post(trust_client, "malaria", ("ct.dcm", Path(path).read_bytes(), "application/dicom"))
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 128, "height": 128}
    assert patient not in response.text and patient not in caplog.text
    no_pixels = post(
        trust_client, "malaria", ("plan.dcm", Path(get_testdata_file("rtplan.dcm")).read_bytes(), "application/dicom")
    )
    assert no_pixels.status_code == 415 and "no pixel data" in no_pixels.json()["error"]["message"]


def test_models_list_shows_the_trust_layer_from_the_cards(trust_client) -> None:
    models = {m["disease"]: m for m in trust_client.get("/models").json()["models"]}
    card = models["malaria"]["card"]
    assert card["calibration"]["temperature"] == TEMPERATURE and card["calibration"]["bias"] == BIAS
    assert card["screening"]["threshold"] == THRESHOLD
    assert card["out_of_distribution"]["threshold"] == 1e6
    assert models["breast_cancer"]["card"]["out_of_distribution"] is None


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), float("inf")])
def test_the_pipeline_itself_refuses_a_threshold_outside_0_to_1(threshold: float) -> None:
    """Whatever door a threshold comes through, the pipeline checks it before any work (InvalidThreshold)."""
    from app.runtime.errors import InvalidThreshold
    from app.runtime.inference import check_threshold

    with pytest.raises(InvalidThreshold, match="threshold must be a number from 0 to 1"):
        check_threshold(threshold)
    check_threshold(0.0)
    check_threshold(1.0)


@pytest.mark.parametrize(
    ("threshold", "words"),
    [
        (1.5, "threshold must be a number from 0 to 1"),
        (-0.2, "threshold must be a number from 0 to 1"),
        ("high", "must be a number from 0 to 1"),
    ],
)
def test_kserve_thresholds_outside_0_to_1_or_not_numbers_are_400(trust_client, threshold, words: str) -> None:
    import base64

    request = {
        "parameters": {"threshold": threshold},
        "inputs": [
            {"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png()[1]).decode()]}
        ],
    }
    response = trust_client.post("/v2/models/malaria/infer", json=request)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_a_dicom_file_is_opened_and_decoded_off_the_event_loop(trust_client, monkeypatch) -> None:
    """pydicom decodes every pixel as it opens a file: on the event loop that stalled every other request."""
    import threading

    from app.contract import preprocessing

    threads: list[str] = []
    original = preprocessing.read_dicom

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(preprocessing, "read_dicom", recording)
    path = get_testdata_file("CT_small.dcm")
    response = post(trust_client, "malaria", ("ct.dcm", Path(path).read_bytes(), "application/dicom"))
    assert response.status_code == 200
    assert threads and all(name != "MainThread" and "loop" not in name.lower() for name in threads)
    loop_thread = trust_client.portal.call(lambda: threading.current_thread().name)
    assert loop_thread not in threads


def test_an_image_the_model_answers_nan_for_is_422_and_the_others_are_still_answered(trust_client, monkeypatch) -> None:
    from app.contract.savedmodel import ImageOutputs

    served = trust_client.app.state.registry.models["malaria"]
    analyse = served.model.analyse

    def nan_for_flat_images(batch: np.ndarray) -> list[ImageOutputs]:
        # a flat image is the one the stand-in breaks on (as the lesion measures did on a black photograph)
        return [
            ImageOutputs(log_odds=float("nan"), ood_distance=o.ood_distance) if image.std() == 0 else o
            for o, image in zip(analyse(batch), batch, strict=True)
        ]

    monkeypatch.setattr(served.batcher, "_predict", nan_for_flat_images)  # what the batcher calls the model by
    black = ("black.png", image_bytes(Image.new("L", (40, 40))), "image/png")
    single = post(trust_client, "malaria", black)
    assert single.status_code == 422, single.text
    assert single.json()["error"]["code"] == "unscorable_image"
    for explain in ("false", "true"):
        response = post(trust_client, "malaria", png(name="a.png"), black, explain=explain)
        results = response.json()["results"]
        assert "score" in results[0] and results[1]["error"]["code"] == "unscorable_image", response.text

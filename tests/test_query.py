"""POST /predict's query options: parsed like FastAPI would, wrong types a 422 naming the parameter."""

from __future__ import annotations

import pytest

from app.api.query import InvalidQuery, PredictOptions, predict_options
from tests.images import gradient, image_bytes


def test_absent_options_are_the_defaults_and_present_ones_parse() -> None:
    assert predict_options({}) == PredictOptions(threshold=None, explain=False, version=None)
    parsed = predict_options({"threshold": "0.25", "explain": "TRUE", "version": "3"})
    assert parsed == PredictOptions(threshold=0.25, explain=True, version=3)
    assert predict_options({"explain": "0"}).explain is False and predict_options({"explain": "on"}).explain is True
    assert predict_options({"threshold": "7"}).threshold == 7.0  # out of range: the pipeline's to refuse


@pytest.mark.parametrize(
    ("query", "phrase"),
    [
        ({"threshold": "high"}, "threshold"),
        ({"explain": "maybe"}, "explain"),
        ({"version": "0"}, "version"),
        ({"version": "1.5"}, "version"),
        ({"version": "-2"}, "version"),
    ],  # fmt: skip
)
def test_a_wrong_type_names_the_parameter(query: dict[str, str], phrase: str) -> None:
    with pytest.raises(InvalidQuery, match=phrase):
        predict_options(query)


def test_the_route_answers_a_wrong_type_with_422_and_documents_every_option(client) -> None:
    files = {"file": ("x.png", image_bytes(gradient()), "image/png")}
    response = client.post("/predict/malaria?version=zero", files=files)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert "version" in response.json()["error"]["message"]
    assert client.post("/predict/malaria?explain=false&version=1", files=files).status_code == 200
    parameters = client.get("/openapi.json").json()["paths"]["/predict/{disease}"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in parameters] == [
        ("disease", "path"), ("threshold", "query"), ("prevalence", "query"), ("explain", "query"), ("version", "query")
    ]  # fmt: skip

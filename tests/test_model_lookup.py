"""The one lookup every protocol uses: states in any condition, metadata of a loaded version, typed errors."""

from __future__ import annotations

import pytest

from app.runtime.errors import ModelUnavailable, UnknownDisease, UnknownVersion
from app.runtime.model_lookup import ModelLookup, parse_version
from app.runtime.registry import ModelStatus


@pytest.fixture
def lookup(client) -> ModelLookup:
    return ModelLookup(client.app.state.registry)


def test_a_loaded_version_and_what_it_takes(lookup: ModelLookup) -> None:
    assert lookup.diseases == ["malaria", "pneumonia", "retinopathy"]
    state = lookup.state("malaria")
    assert (state.version, state.status, state.ready, state.error) == (1, ModelStatus.READY, True, None)
    assert state.card is not None and state.card.disease == "malaria"
    assert lookup.model_ready("malaria", 1)
    metadata = lookup.model_metadata("retinopathy")
    assert (metadata.version, metadata.input_shape, metadata.ready_versions) == (1, (48, 48, 3), [1])


def test_a_failed_version_is_reported_but_has_no_metadata(lookup: ModelLookup) -> None:
    (failed,) = lookup.states("pneumonia")
    assert failed.status is ModelStatus.FAILED and not failed.ready and failed.card is None
    assert "metadata.json is not a valid model card" in (failed.error or "")
    assert not lookup.model_ready("pneumonia")
    with pytest.raises(ModelUnavailable, match="pneumonia model version 1 is failed"):
        lookup.model_metadata("pneumonia")


def test_what_is_not_held_is_a_typed_error(lookup: ModelLookup) -> None:
    with pytest.raises(UnknownDisease, match="known: malaria, pneumonia, retinopathy"):
        lookup.state("cholera")
    with pytest.raises(UnknownDisease):
        lookup.states("cholera")
    with pytest.raises(UnknownVersion, match="served versions: 1"):
        lookup.model_metadata("malaria", 7)
    with pytest.raises(UnknownVersion, match="version latest of the malaria model"):
        parse_version("malaria", "latest")
    assert parse_version("malaria", "12") == 12 and parse_version("malaria", None) is None
    for digit_like in ("\u00b9", "\u2460", "1\u00b2"):  # str.isdigit() takes these, int() does not: a 500 once
        with pytest.raises(UnknownVersion):
            parse_version("malaria", digit_like)


def test_a_superscript_version_in_every_protocols_url_is_a_404(client) -> None:
    # found by the OpenAPI test (schemathesis) in a fresh clone: GET /v2/models/{name}/versions/\u00b9 answered 500
    for path in ("/v2/models/malaria/versions/\u00b9", "/v1/models/malaria/versions/\u00b9"):
        response = client.get(path)
        assert response.status_code in (400, 404, 422), (path, response.status_code, response.text)

"""POST /predict's query options, read by hand.

FastAPI validating three optional query parameters cost 0.34 ms per request (benchmarks/results/
serving-profile.md), more than decoding a small image, so the hot route reads them itself; `PARAMETERS`
documents them in OpenAPI as FastAPI would. A value of the wrong type is InvalidQuery (422); a threshold
outside 0-1 reaches the pipeline, whose own check answers it (app/runtime/inference.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

THRESHOLD_DOC = "decision threshold on the calibrated P(infected); default: the model's screening threshold"
PREVALENCE_DOC = (
    "this clinic's share of disease (0 to 1, not either): P(infected) is moved to it from the share the "
    "calibration was fitted at (the answer's `prevalence`), and the screening threshold with it; default: the "
    "deployment's (MEDSCAN_PREVALENCE), else none"
)
EXPLAIN_DOC = "add a Grad-CAM heatmap and overlay to each answer"
VERSION_DOC = "pin a model version (default: the newest ready one)"
TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})  # what pydantic accepts for a bool
FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


class InvalidQuery(Exception):
    """A query parameter that does not parse as its type."""


@dataclass(frozen=True)
class PredictOptions:
    threshold: float | None = None
    prevalence: float | None = None
    explain: bool = False
    version: int | None = None


def predict_options(query: Mapping[str, str]) -> PredictOptions:
    return PredictOptions(
        threshold=_number("threshold", query.get("threshold")),
        prevalence=_number("prevalence", query.get("prevalence")),
        explain=_flag("explain", query.get("explain")),
        version=_version("version", query.get("version")),
    )


def _number(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidQuery(f"{name}: must be a number from 0 to 1, got {value!r}") from None


def _flag(name: str, value: str | None) -> bool:
    if value is None or value.lower() in FALSE:
        return False
    if value.lower() in TRUE:
        return True
    raise InvalidQuery(f"{name}: must be true or false, got {value!r}")


def _version(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdecimal() or int(value) < 1:
        raise InvalidQuery(f"{name}: must be a whole number from 1, got {value!r}")
    return int(value)


PARAMETERS = [
    {
        "name": "threshold",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": 1},
        "description": THRESHOLD_DOC,
    },
    {
        "name": "prevalence",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "description": PREVALENCE_DOC,
    },
    {
        "name": "explain",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": EXPLAIN_DOC,
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": VERSION_DOC,
    },
]

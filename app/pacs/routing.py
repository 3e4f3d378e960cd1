"""Which models answer a DICOM instance: a table of rules on its attributes (Modality, BodyPartExamined,
SeriesDescription) naming a kind of image; the models whose card reads that kind answer it. The table is a
setting (`MEDSCAN_DICOM_ROUTES`); a request may instead name its model (`?disease=`)."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field
from pydicom.dataset import Dataset

from app.contract.modality import Modality


class Route(BaseModel):
    """Instances whose attributes match every condition given (each list: any of its values; empty: any) are
    of `kind`; `diseases`, if given, names the models instead of finding them by kind."""

    modality: list[str] = Field(default_factory=list, description="DICOM Modality (0008,0060) values, e.g. DX, CR")
    body_part: list[str] = Field(default_factory=list, description="BodyPartExamined (0018,0015) values")
    series_description: str | None = Field(None, description="a regular expression on SeriesDescription")
    kind: Modality | None = None
    diseases: list[str] = Field(default_factory=list)


DEFAULT_ROUTES = [
    Route(modality=["DX", "CR"], body_part=["CHEST", "THORAX", ""], kind=Modality.CHEST_XRAY),
    Route(modality=["MR"], body_part=["HEAD", "BRAIN", ""], kind=Modality.BRAIN_MRI),
    Route(modality=["US"], body_part=["BREAST", ""], kind=Modality.BREAST_ULTRASOUND),
    Route(
        modality=["OP", "XC"],
        body_part=["EYE", "RETINA", "FUNDUS", ""],
        kind=Modality.FUNDUS_PHOTOGRAPH,
        series_description=r"(?i)^(?!.*smear).*$",
    ),  # fmt: skip
    Route(
        modality=["SM", "XC", "OT"], series_description=r"(?i)smear|blood|parasit|cell", kind=Modality.BLOOD_SMEAR_CELL
    ),
]


def _text(dataset: Dataset, keyword: str) -> str:
    return str(dataset.get(keyword, "") or "").strip().upper()


def matches(route: Route, dataset: Dataset) -> bool:
    if route.modality and _text(dataset, "Modality") not in route.modality:
        return False
    if route.body_part and _text(dataset, "BodyPartExamined") not in route.body_part:
        return False
    description = str(dataset.get("SeriesDescription", "") or "")
    return route.series_description is None or re.search(route.series_description, description) is not None


def route(dataset: Dataset, routes: list[Route], kinds: dict[str, Modality | None]) -> list[str]:
    """The models (by the kind each card reads, from `kinds`) that answer this instance, by the first rule that
    matches; none when no rule does."""
    for rule in routes:
        if matches(rule, dataset):
            if rule.diseases:
                return [disease for disease in rule.diseases if disease in kinds]
            return sorted(disease for disease, kind in kinds.items() if kind is not None and kind == rule.kind)
    return []

"""Response bodies, as documented in OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.model_card import INTENDED_USE, ModelCard
from app.registry import ModelStatus


class ImageSize(BaseModel):
    width: int
    height: int


class Prediction(BaseModel):
    disease: str
    model_version: int
    label: str = Field(description="the class with the higher probability")
    probabilities: dict[str, float] = Field(
        description="percent per class, summing to 100: each sigmoid score divided by the sum of both",
        examples=[{"infected": 97.31, "uninfected": 2.69}],
    )
    image: ImageSize = Field(description="size of the image as sent, after EXIF orientation")
    intended_use: str = INTENDED_USE


class ModelInfo(BaseModel):
    disease: str
    version: int | None
    status: ModelStatus
    error: str | None = None
    card: ModelCard | None = Field(None, description="the model card (metadata.json), when loaded")


class ModelList(BaseModel):
    models: list[ModelInfo]


class Liveness(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str = Field(description="'ready' or 'starting'")
    models: dict[str, ModelStatus]


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="stable machine-readable reason, e.g. unknown_disease")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail

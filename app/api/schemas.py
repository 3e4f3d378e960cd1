"""Response bodies, as documented in OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.contract.modality import Modality, ModalityCard
from app.contract.model_card import INTENDED_USE, ModelCard
from app.runtime.registry import ModelStatus


class ImageSize(BaseModel):
    width: int
    height: int


class OutOfDistribution(BaseModel):
    distance: float = Field(description="Mahalanobis distance of the image's features from the training part")
    threshold: float = Field(description="distances above it are flagged (the 97.5th percentile on validation)")
    distance_percentile: float | None = Field(
        None, description="where the distance falls among the validation part's (0-100); null: not kept in the card"
    )
    unlike_training_sites: bool | None = Field(
        None,
        description="true: the right kind of image, but beyond the 90th percentile of the training sites' own "
        "images: the figures measured at held-out sites apply (the card's generalisation); null: not measured or "
        "already out of distribution",
    )


class ModalityAnswer(BaseModel):
    kind: Modality = Field(description="the kind of image the modality check finds most probable")
    expected: Modality = Field(description="the kind the model reads (its card's modality)")
    probability: float = Field(description="the check's probability that the image is of the expected kind")
    minimum: float = Field(description="below this probability the image is the wrong kind for the model")
    wrong_kind: bool = Field(description="true: not the kind of image the model reads; do not trust the label")


class Explanation(BaseModel):
    target_class: str = Field(description="the class whose evidence the heatmap shows: the answered label")
    heatmap: list[list[float]] = Field(
        description="Grad-CAM of the last convolution, H x W at the model's input resolution, values in [0, 1]"
    )
    overlay_png: str = Field(description="base64 PNG: the heatmap over the image as sent (at most 512 px)")


class Prediction(BaseModel):
    disease: str
    model_version: int
    label: str = Field(description="`infected` when `score` reaches `threshold`, else `uninfected`")
    score: float = Field(description="calibrated probability of `infected`, unrounded (for ROC curves)")
    probabilities: dict[str, float] = Field(
        description="calibrated percent per class, rounded to 2 places, summing to 100",
        examples=[{"infected": 97.31, "uninfected": 2.69}],
    )
    threshold: float = Field(
        description="decision threshold used: the model's screening threshold (moved with `prevalence` where one was "
        "given) or the request's"
    )
    prevalence: float | None = Field(
        None,
        description="the share of disease `score` holds at: the request's or the deployment's, else the one the "
        "calibration was fitted at; null: the version does not record it",
    )
    in_distribution: bool | None = Field(
        description="false: not the kind of image the model reads (by the modality check where the service has "
        "one, else by the model's feature distance; or a colour picture sent to an X-ray, MRI or ultrasound "
        "model), do not trust the label; null: neither check is available for this model version"
    )
    out_of_distribution: OutOfDistribution | None = None
    modality: ModalityAnswer | None = Field(
        None, description="the service's modality check (which kind of image this is); null: no check for this model"
    )
    warning: str | None = Field(None, description="set when the label must not be trusted, and why")
    image: ImageSize | None = Field(description="size of the image as sent, after EXIF orientation")
    explanation: Explanation | None = Field(None, description="with ?explain=true")
    intended_use: str = INTENDED_USE


class VersionInfo(BaseModel):
    version: int | None
    status: ModelStatus
    error: str | None = None


class ModelInfo(BaseModel):
    disease: str
    version: int | None = Field(description="the version that answers requests that do not pin one")
    status: ModelStatus
    error: str | None = None
    explainable: bool = Field(False, description="this version can answer ?explain=true (Grad-CAM)")
    card: ModelCard | None = Field(None, description="the model card (metadata.json), when loaded")
    versions: list[VersionInfo] = Field(
        default_factory=list, description="every version held (per the version policy), newest first, failed ones too"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]
    modality_check: ModalityCard | None = Field(
        None, description="the service's modality check (which kind of image this is) and its figures; null: none"
    )
    scan_error: str | None = Field(
        None, description="set when the models folder could not be read at the last look; what was loaded keeps serving"
    )


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


class ProtocolError(BaseModel):
    """TF Serving's and KServe V2's error shape."""

    error: str


class ImageError(ErrorBody):
    """One image of a multi-image request that could not be screened."""

    filename: str | None = None


class PredictionItem(Prediction):
    filename: str | None = None


class Predictions(BaseModel):
    results: list[PredictionItem | ImageError] = Field(
        description="one entry per `file` part, in order: a prediction, or the error for that image"
    )

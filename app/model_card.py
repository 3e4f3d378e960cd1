"""The model card (`metadata.json`), written by training and read by the service.

Modelled on MONAI bundles' metadata.json: classes in output index order, the input spec,
how inputs are prepared, test metrics, data source and intended use.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.preprocessing import ColourMode, InputSpec

INTENDED_USE = "research use only; not for diagnosis"
CLASS_NAMES = ("infected", "uninfected")


class InputCard(BaseModel):
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: int = Field(ge=1, le=3)
    colour_mode: ColourMode
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)

    def spec(self) -> InputSpec:
        return InputSpec(height=self.height, width=self.width, colour_mode=self.colour_mode)

    @classmethod
    def from_spec(cls, spec: InputSpec) -> InputCard:
        return cls(
            height=spec.height, width=spec.width, channels=spec.colour_mode.channels,
            colour_mode=spec.colour_mode,
        )


class TestMetrics(BaseModel):
    """Figures on the held-out, group-split test part. Positive class: infected."""

    n_images: int
    accuracy: float
    sensitivity: float
    specificity: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted, in `classes` order
    threshold: float = 0.5


class SplitCounts(BaseModel):
    train: dict[str, int]
    validation: dict[str, int]
    test: dict[str, int]
    groups: dict[str, int]
    unreadable_skipped: int = 0


class DataCard(BaseModel):
    source: str
    split: str
    counts: SplitCounts
    caveats: list[str] = []


class TrainingCard(BaseModel):
    recipe: str
    settings: dict[str, object]
    seed: int
    epochs_run: int
    best_epoch: int
    seconds: float
    machine: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format_version: int = 1
    disease: str
    version: int
    description: str
    classes: list[str] = list(CLASS_NAMES)
    input: InputCard
    preprocessing: str
    output: str
    metrics: TestMetrics
    data: DataCard
    training: TrainingCard
    frameworks: dict[str, str]
    intended_use: str = INTENDED_USE
    created: str


def read_card(path: Path) -> ModelCard:
    return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")

"""The model card (`metadata.json`), written by training and read by the service.

Modelled on MONAI bundles' metadata.json: classes in output index order, the input spec,
how inputs are prepared, test metrics, data source and intended use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.contract.modality import Modality
from app.contract.preprocessing import ColourMode, Enhancement, InputSpec

INTENDED_USE = "research use only; not for diagnosis"
CLASS_NAMES = ("infected", "uninfected")


class InputCard(BaseModel):
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: int = Field(ge=1, le=3)
    colour_mode: ColourMode
    enhancement: Enhancement = Field(Enhancement.NONE, description="absent in older cards: none")
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)

    def spec(self) -> InputSpec:
        return InputSpec(
            height=self.height, width=self.width, colour_mode=self.colour_mode, enhancement=self.enhancement
        )

    @classmethod
    def from_spec(cls, spec: InputSpec) -> InputCard:
        return cls(
            height=spec.height,
            width=spec.width,
            channels=spec.colour_mode.channels,
            colour_mode=spec.colour_mode,
            enhancement=spec.enhancement,
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
    intervals: dict[str, tuple[float, float]] | None = Field(
        None, description="95% bootstrap intervals over patient groups, per metric"
    )


class OperatingPoint(BaseModel):
    """Sensitivity and specificity when `infected` is answered for a calibrated score >= threshold."""

    threshold: float
    sensitivity: float
    specificity: float
    intervals: dict[str, tuple[float, float]] | None = Field(
        None, description="95% bootstrap intervals over patient groups (test part only)"
    )


class CalibrationFigures(BaseModel):
    """Expected calibration error (top-label confidence, equal-width bins) and Brier score."""

    n_images: int
    bins: int = 15
    ece_before: float
    ece_after: float
    ece_floor: float | None = Field(
        None, description="the mean ECE a perfectly calibrated model giving the calibrated answers would show"
    )
    brier_before: float
    brier_after: float


class Calibration(BaseModel):
    """Temperature (Guo et al., 2017) or Platt scaling of the log-odds of the two normalised scores.

    calibrated P(infected) = sigmoid(log(s_infected / s_uninfected) / temperature + bias). Temperature 1 and
    bias 0 give back the uncalibrated probability s_infected / (s_infected + s_uninfected); a bias corrects a
    model whose training weighed the classes alike where they are not (Platt, 1999)."""

    method: Literal["temperature", "platt"] = "temperature"
    temperature: float = Field(gt=0)
    bias: float = Field(0.0, description="added to the scaled log-odds (Platt scaling); absent in older cards: 0")
    fitted_on: str
    selection: str = Field("", description="why this method (none, temperature or Platt) on held-out patients")
    test: CalibrationFigures | None = None

    def parameters(self) -> tuple[float, float]:
        """(temperature, bias), as `app.contract.scoring.calibrated_probability` takes them."""
        return self.temperature, self.bias


UNCALIBRATED = (1.0, 0.0)  # (temperature, bias) of a card without calibration


class Screening(BaseModel):
    """The decision threshold chosen on the validation part to reach a target sensitivity."""

    target_sensitivity: float = Field(ge=0, le=1)
    threshold: float = Field(ge=0, le=1)
    validation: OperatingPoint
    test: OperatingPoint | None = None
    test_at_0_5: OperatingPoint | None = None


class FlagRate(BaseModel):
    n_images: int
    flagged: float = Field(description="share of the images flagged out of distribution")
    target: str


class OutOfDistribution(BaseModel):
    """Distance of an image's features from the training part; above `threshold` it is flagged."""

    method: str
    fitted_on: str
    threshold: float
    threshold_quantile: float = Field(description="quantile of the validation part's distances")
    flagged: dict[str, FlagRate] = Field(default_factory=dict, description="measured on test sets")
    validation_quantiles: list[float] | None = Field(
        None,
        description="the validation part's distances at percentiles 0, 5, ..., 100: where an answer's distance "
        "falls among them is its site-shift signal (app/contract/site_shift.py); absent: no site-shift signal",
    )


class BurnedInMarks(BaseModel):
    """How much a version's answers rest on burned-in calipers and text (training/experiments/marks.py)."""

    model_config = ConfigDict(extra="ignore")

    method: str
    images: int = Field(description="test images checked")
    with_marks: int
    with_marks_by_class: dict[str, int]
    mean_abs_change: float = Field(description="mean |change of P(infected)| on images with marks when painted out")
    flipped_at_screening_threshold: int
    roc_auc_as_is: float | None
    roc_auc_painted_out: float | None
    by_site: dict[str, dict[str, object]] = Field(
        default_factory=dict,
        description="the same figures per site; a site without marks is the control (only speckle is painted out)",
    )
    report: str = ""


class GradeFigure(BaseModel):
    """How the screening threshold treats the test images of one grade (e.g. ICDR 0-4)."""

    grade: int
    label: str = Field(description="the class the images of this grade belong to")
    n_images: int
    flagged_infected: float = Field(
        description="share answered infected at the screening threshold: the "
        "sensitivity for an infected grade, 1 - specificity for an uninfected one"
    )


class SiteFigures(BaseModel):
    """A model's figures at one site: on its unseen patients (test part, trained with every site), and with
    the whole site held out (trained on the other sites only: the estimate for a new hospital)."""

    site: str
    n_images: int = Field(description="images of this site in the data set")
    within: dict[str, object] | None = Field(None, description="the test part's images of this site, as served")
    held_out: dict[str, object] | None = Field(
        None,
        description="leave-one-site-out: AUC with its group-bootstrap "
        "interval, the screening threshold's operating point, ECE, flags",
    )


class Generalisation(BaseModel):
    method: str = "leave one site out"
    sites: list[SiteFigures]
    seconds: float = Field(description="training time of all held-out rounds, 2 cores")
    report: str


class SplitSpec(BaseModel):
    """How the data were split, in numbers, so that the same parts can be rebuilt later."""

    method: Literal["group"] = "group"
    test_fraction: float = 0.15
    validation_fraction: float = 0.3  # of what is left after the test part
    seed: int = 42
    stratified: bool = True


class SplitCounts(BaseModel):
    train: dict[str, int]
    validation: dict[str, int]
    test: dict[str, int]
    groups: dict[str, int]
    unreadable_skipped: int = 0


class DataCard(BaseModel):
    source: str
    split: str
    split_spec: SplitSpec = Field(default_factory=SplitSpec, description="absent in old cards: the defaults then")
    counts: SplitCounts
    caveats: list[str] = []


class TrainingCard(BaseModel):
    recipe: str
    architecture: str = Field(
        "paper_cnn",
        description="paper_cnn, or the Keras Applications network with a new "
        "head, or `ensemble of ...` (see the card's ensemble_of)",
    )
    settings: dict[str, object]
    seed: int
    epochs_run: int
    best_epoch: int
    seconds: float
    machine: str


class EnsembleMember(BaseModel):
    """One network of an ensemble version: the version it was first published as, and how it was trained."""

    version: int
    architecture: str
    recipe: str
    initial_weights: str = Field("none", description="the backbone its training started from; none: from scratch")
    best_epoch: int
    seconds: float
    input: list[int] | None = Field(
        None,
        description="height, width, channels it reads; smaller than the ensemble's input: the image is resized to "
        "it in the graph (absent in older cards: the ensemble's input)",
    )


class ScreeningCrossValidation(BaseModel):
    """The rounds measured at the threshold the service answers with, each chosen on its own validation fold
    for `target_sensitivity`, as an exported version chooses it."""

    target_sensitivity: float
    summary: dict[str, dict[str, float]]


class CrossValidatedCalibration(BaseModel):
    """The version's calibration method fitted on each round's validation fold and measured on its held-out fold:
    its calibration on every patient of the pool, not only on the test part's few hundred."""

    method: Literal["none", "temperature", "platt"]
    pooled_ece: float = Field(description="ECE over every round's held-out answers together")
    pooled_floor: float = Field(description="the mean ECE a perfectly calibrated model would show on those answers")
    ece: dict[str, float] = Field(description="mean and std of the rounds' ECE")
    floor: float = Field(description="the same floor, on one round's answers (mean over rounds)")


class CrossValidation(BaseModel):
    """Grouped, stratified k-fold cross-validation of the recipe on the non-test part (`python -m training
    cross-validate`): how it does on patients it has not seen, mean and standard deviation over rounds."""

    folds: int
    seed: int
    images: int
    groups: int
    input: list[int]
    enhancement: Enhancement = Enhancement.NONE
    architecture: str
    recipe: dict[str, object]
    differences: list[str] = Field(
        default_factory=list, description="where the cross-validated recipe differs from this model's"
    )
    test_time_flips: list[str] = Field(
        default_factory=list, description="the rounds answered over these flips, as the version does"
    )
    summary: dict[str, dict[str, float]] = Field(description="at a threshold of 0.5")
    screening: ScreeningCrossValidation | None = Field(None, description="absent: measured at 0.5 only")
    calibration: CrossValidatedCalibration | None = Field(None, description="absent: recorded before it was measured")
    seconds: float
    report: str = Field(description="the full result, rounds included, in the repository")


class SourceConfound(BaseModel):
    """How well a classifier blind to the disease (a linear model on global colour and border statistics of the
    pixels this model is fed) separates the classes, on held-out patients (`python -m training confound`). Near
    0.5: the classes differ in nothing so coarse. High: source, camera or border tell them apart, and the
    model's figures are not all evidence that it sees the disease."""

    features: list[str]
    input: list[int]
    enhancement: Enhancement = Enhancement.NONE
    images: int
    groups: int
    roc_auc: float = Field(description="out-of-fold ROC AUC over every image")
    fold_mean: float
    fold_std: float
    report: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format_version: int = 2
    disease: str
    version: int
    description: str
    classes: list[str] = list(CLASS_NAMES)
    modality: Modality | None = Field(
        None,
        description="the kind of image the model reads; the service's modality check answers 'wrong kind of image' "
        "for any other (absent, or other: no check)",
    )
    input: InputCard
    preprocessing: str
    output: str
    test_time_flips: list[Literal["horizontal", "vertical"]] = Field(
        default_factory=list,
        description="the graph answers for the image and these flips of it together "
        "(mean P(infected)); each flip is one more pass of the network per image",
    )
    metrics: TestMetrics
    calibration: Calibration | None = Field(None, description="absent in cards before format 2: uncalibrated")
    screening: Screening | None = Field(None, description="absent in cards before format 2: threshold 0.5")
    out_of_distribution: OutOfDistribution | None = Field(
        None, description="absent in cards before format 2: no out-of-distribution check"
    )
    cross_validation: CrossValidation | None = Field(None, description="absent: the recipe was not cross-validated")
    source_confound: SourceConfound | None = Field(None, description="absent: not measured for this disease")
    generalisation: Generalisation | None = Field(None, description="absent: the data set has one site")
    by_grade: list[GradeFigure] = Field(default_factory=list, description="empty: the data set has no grades")
    burned_in_marks: BurnedInMarks | None = Field(None, description="absent: not checked (no burned-in marks expected)")
    kernel_bits: Literal[8, 16, 32] = Field(
        32,
        description="bits each convolution and dense kernel is stored at; 16: float16; 8: int8 with a float32 "
        "scale per output channel; computed in float32 either way (the figures are measured on the rounded "
        "kernels; biases and normalisation statistics stay 32, the out-of-distribution matrices 16 below 32)",
    )
    derived_from: int | None = Field(None, description="version whose weights this one re-exports, if any")
    ensemble_of: list[EnsembleMember] = Field(
        default_factory=list,
        description="empty: one network. Else the networks whose mean P(infected) this "
        "version answers, each one more pass per image",
    )
    data: DataCard
    training: TrainingCard
    frameworks: dict[str, str]
    intended_use: str = INTENDED_USE
    created: str

    def calibration_parameters(self) -> tuple[float, float]:
        """(temperature, bias) as the service applies them; (1, 0) for a card without calibration."""
        return self.calibration.parameters() if self.calibration else UNCALIBRATED

    def calibrated_prevalence(self) -> float | None:
        """The share of `infected` in the part the calibration was fitted on (the validation part): where the
        calibrated P(infected) holds. None without calibration or without that part's counts."""
        if self.calibration is None:
            return None
        counts = self.data.counts.validation
        total = sum(counts.values())
        return counts.get(self.classes[0], 0) / total if total else None

    def views_per_image(self) -> int:
        """The network passes one image costs: itself and every combination of its test-time flips."""
        return views_under(self.test_time_flips)

    def batch_within(self, max_pixels: int, max_images: int) -> int:
        """The most images one call may take so that it holds at most `max_pixels` over every view."""
        spec = self.input.spec()
        return images_within(max_pixels, max_images, spec.height * spec.width * self.views_per_image())


def images_within(max_pixels: int, max_images: int, pixels_per_image: int) -> int:
    """The most images one call may take, at least one, so that it holds at most `max_pixels`."""
    return max(1, min(max_images, max_pixels // pixels_per_image))


def views_under(flips: Sequence[str]) -> int:
    """The network passes one image costs under test-time flips: itself and every combination of them."""
    return 2 ** len(flips)


def read_card(path: Path) -> ModelCard:
    return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")


def replace_card(card: ModelCard, path: Path) -> None:
    """Rewrite a published card in place, atomically: a reader sees the old card or the new one."""
    staged = path.with_name(f".{path.name}.new")
    write_card(card, staged)
    os.replace(staged, path)

"""Per-disease settings: input size and colour mode, chosen per data set, and the two recipes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from app.preprocessing import ColourMode, InputSpec


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. `paper` is the paper's recipe; `medscan` adds what measurably helped."""

    name: str
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decay to 1% over the run, which steadies the last epochs
    bn_momentum: float = 0.99  # Keras' default; the paper does not change it
    keep_best: bool = False  # restore the weights of the best validation epoch
    recalibrate_bn: bool = False  # re-estimate BatchNorm statistics in inference mode after training
    class_weights: bool = False
    augment: bool = False  # flips and small shifts, for data sets where orientation is not meaningful
    flip_horizontal: bool = True
    flip_vertical: bool = False  # for images with no up and down (cells)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PAPER = Recipe(name="paper")
MEDSCAN = Recipe(
    name="medscan", bn_momentum=0.9, keep_best=True, recalibrate_bn=True, class_weights=True,
    lr_schedule="cosine",
)


@dataclass(frozen=True)
class DiseaseConfig:
    name: str
    description: str
    image_size: int
    colour_mode: ColourMode
    medscan: Recipe
    source: str

    def spec(self, image_size: int | None = None) -> InputSpec:
        size = image_size or self.image_size
        return InputSpec(height=size, width=size, colour_mode=self.colour_mode)

    def recipe(self, name: str) -> Recipe:
        if name == "paper":
            return PAPER
        if name == "medscan":
            return self.medscan
        raise ValueError(f"unknown recipe {name!r}; choose 'paper' or 'medscan'")


DISEASES: dict[str, DiseaseConfig] = {
    config.name: config
    for config in (
        DiseaseConfig(
            name="malaria",
            description="Parasitized vs uninfected red blood cells from thin Giemsa-stained blood smears",
            image_size=50, colour_mode=ColourMode.GRAYSCALE,
            medscan=replace(MEDSCAN, flip_vertical=True),  # a cell has no up or down
            source="NIH/NLM malaria cell images (Rajaraman et al., 2018), 50x50 grayscale copy",
        ),
        DiseaseConfig(
            name="pneumonia",
            description="Pneumonia vs normal paediatric chest X-rays",
            image_size=64, colour_mode=ColourMode.GRAYSCALE,
            medscan=replace(MEDSCAN, epochs=25, augment=True, flip_horizontal=False),
            source="Kermany et al., Cell 2018 (Guangzhou Women and Children's Medical Center), train part",
        ),
        DiseaseConfig(
            name="brain_tumor",
            description="Tumour (glioma, meningioma, pituitary) vs no tumour, brain MRI",
            image_size=96, colour_mode=ColourMode.GRAYSCALE,
            medscan=replace(MEDSCAN, epochs=25, augment=True),
            source="Brain Tumor MRI Dataset (M. Nickparvar, Kaggle), both parts, duplicates removed",
        ),
        DiseaseConfig(
            name="breast_cancer",
            description="Malignant vs benign or normal breast ultrasound",
            image_size=64, colour_mode=ColourMode.GRAYSCALE,
            medscan=replace(MEDSCAN, epochs=60, batch_size=32, augment=True),
            source="BUSI, Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 2020)",
        ),
        DiseaseConfig(
            name="retinopathy",
            description="Diabetic retinopathy (any grade) vs normal colour fundus photographs",
            image_size=96, colour_mode=ColourMode.RGB,
            medscan=replace(MEDSCAN, epochs=30, batch_size=64, augment=True),
            source="Kaggle 'Eye Diseases Classification' (diabetic_retinopathy and normal classes)",
        ),
    )
}

CAVEATS: dict[str, list[str]] = {
    "malaria": [
        "Trained on 50x50 grayscale cell crops (the published copy was downscaled and converted by its "
        "publisher); colour images sent to it are converted to grayscale.",
        "Input is one segmented red blood cell, not a whole smear.",
    ],
    "pneumonia": [
        "Paediatric chest X-rays from one centre; performance on adults or other centres is unknown.",
        "Imbalanced (about 3:1 pneumonia:normal): read sensitivity, specificity and AUC, not accuracy alone.",
        "Images were squashed to 224x224 by their publisher; the model sees them squashed further.",
    ],
    "brain_tumor": [
        "Tumour classes (glioma, meningioma, pituitary) are merged into 'infected'; no tumour type is given.",
        "Near-duplicate images share a group and stay on one side of a split.",
    ],
    "breast_cancer": [
        "Breast ultrasound (BUSI), not histopathology or mammography.",
        "Small (663 images) and imbalanced: the test figures have wide confidence intervals.",
        "'uninfected' means benign or normal tissue, not 'no finding'.",
    ],
    "retinopathy": [
        "The two classes most likely come from different source collections (EyePACS-style vs ODIR-style "
        "names), so they also differ in camera and clinic. Five global colour and border statistics with a "
        "linear classifier already separate them with AUC about 0.80: high accuracy here is NOT evidence of "
        "retinopathy detection.",
        "No grade is given: 'infected' means any diabetic retinopathy. The two eyes of one patient share a group.",
    ],
}


def get_disease(name: str) -> DiseaseConfig:
    try:
        return DISEASES[name]
    except KeyError:
        raise ValueError(f"unknown disease {name!r}; known: {', '.join(DISEASES)}") from None

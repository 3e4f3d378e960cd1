"""Per-disease settings, one record per disease: input size and colour mode (chosen per data set), the
tuned recipe, source, caveats and target; and how a disease we do not know is described (a
`disease.json` beside its images, or flags)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.modality import Modality
from app.model_store import DISEASE_NAME
from app.preprocessing import ColourMode, Enhancement, InputSpec
from training.data.samples import LabelRule, Sample, find_samples

DEFAULT_LEARNING_RATE = 1e-3  # Adam's default, as the paper uses it
ICDR_GRADE = r"ICDR grade (\d)"  # Messidor-2's adjudicated grade, 0-4, in each retinopathy image's manifest note


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. `paper` is the paper's recipe; `medscan` adds what measurably helped."""

    name: str
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = DEFAULT_LEARNING_RATE
    lr_schedule: str = "constant"  # or "cosine": decay to 1% over the run, which steadies the last epochs
    bn_momentum: float = 0.99  # Keras' default; the paper does not change it
    keep_best: bool = False  # restore the weights of the best validation epoch
    recalibrate_bn: bool = False  # re-estimate BatchNorm statistics in inference mode after training
    class_weights: bool = False
    augment: bool = False  # flips and small shifts, for data sets where orientation is not meaningful
    flip_horizontal: bool = True
    flip_vertical: bool = False  # for images with no up and down (cells)
    # Each training image in a random one of its 8 flips and quarter turns: exact symmetries for images with no
    # orientation (cells), where rotation by other angles, shifts and zoom would crop or pad them.
    dihedral: bool = False
    # Random hue, saturation and brightness per image, as another lab's stain and light would vary them (RGB only).
    stain_jitter: bool = False
    # Start the paper's CNN from a backbone pretrained on the other data sets (training/networks/pretrain.py), made
    # on first use and kept in backbones/; for the small sets, whose own images are too few for features.
    pretrained_start: bool = False
    # Weigh each (site, class) cell alike (the disease's `sites`), so that no site stands for a class.
    balance_sites: bool = False
    # Keep an ImageNet backbone frozen and fit only a logistic-regression head on its pooled features, computed
    # once per image (training/networks/frozen_head.py); with `augment`, once per flip too.
    frozen_backbone: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PAPER = Recipe(name="paper")
MEDSCAN = Recipe(
    name="medscan",
    bn_momentum=0.9,
    keep_best=True,
    recalibrate_bn=True,
    class_weights=True,
    lr_schedule="cosine",
)


@dataclass(frozen=True)
class SiteRule:
    """One site (a hospital, a collection, a scanner) of a data set: the images whose file name (or manifest
    note) matches `pattern`; the first matching rule wins, so a last rule with the pattern "" takes the rest."""

    name: str
    pattern: str
    column: str = "file"  # "file": the file's name; "note": its manifest note


def site_of(sample: Sample, note: str, rules: tuple[SiteRule, ...]) -> str:
    """The first rule that matches the file's name (or its manifest note) names the sample's site."""
    for rule in rules:
        text = sample.path.name if rule.column == "file" else note
        if re.search(rule.pattern, text):
            return rule.name
    raise ValueError(f"{sample.path.name}: no site rule matches it (add a catch-all rule with the pattern '')")


def sites_of(samples: list[Sample], notes: list[str], rules: tuple[SiteRule, ...]) -> list[str]:
    return [site_of(sample, note, rules) for sample, note in zip(samples, notes, strict=True)]


@dataclass(frozen=True)
class DiseaseConfig:
    name: str
    description: str
    image_size: int
    colour_mode: ColourMode
    medscan: Recipe
    source: str
    caveats: tuple[str, ...] = ()
    target: str = "-"  # what the shipped model should reach on its test part (README results table)
    goal: str = "-"  # what it should reach on patients it has not seen, under grouped cross-validation
    paper: tuple[str, str] = ("-", "-")  # the paper's Table 1 test accuracy, and the best figure its text states
    described_by: str = "MedScan's tuned defaults"
    enhancement: Enhancement = Enhancement.NONE
    # How the exported version answers, chosen by grouped cross-validation from the kept scores
    # (reports/crossval/): the sensitivity its screening threshold is fitted for on the validation part,
    # and the flips it answers over (each one more network pass per image).
    screening_sensitivity: float = 0.95
    test_time_flips: tuple[str, ...] = ()
    labels: LabelRule | None = None  # None: the class folders; else from the manifest (training/data/samples.py)
    # A number in each image's manifest note (e.g. its grade) that evaluation reports figures for, one by one.
    grade_pattern: str | None = None
    # The sites its images come from, for leave-one-site-out evaluation (training/experiments/cross_site.py).
    sites: tuple[SiteRule, ...] = ()
    # The kind of image the model reads (app/modality.py): the service's modality check compares it with the
    # kind an image is; OTHER for a disease of a kind MedScan does not know (no check then).
    modality: Modality = Modality.OTHER

    def spec(self, image_size: int | None = None) -> InputSpec:
        size = image_size or self.image_size
        return InputSpec(height=size, width=size, colour_mode=self.colour_mode, enhancement=self.enhancement)

    @property
    def images_folder(self) -> str:
        """The folder under the data directory whose images this disease trains on."""
        return self.labels.images_from if self.labels else self.name

    def recipe(self, name: str) -> Recipe:
        if name == "paper":
            return PAPER
        if name == "medscan":
            return self.medscan
        raise ValueError(f"unknown recipe {name!r}; choose 'paper' or 'medscan'")


# Messidor-2's two collections: the extension's IM00NNNN files (Brest) and the original Messidor departments.
MESSIDOR_COLLECTIONS = (
    SiteRule("Messidor-2 extension (IM00 files)", r"^messidor2_IM"),
    SiteRule("Messidor original", ""),
)

# What both Messidor-2 models (any retinopathy, referable retinopathy) share: the images, their input and its
# preparation, the recipe, the sites and the grades.
MESSIDOR_2 = DiseaseConfig(
    name="messidor_2",
    description="",
    # The disc preparation crops the eye disc wherever it lies (so a camera's uncropped photograph is answered like
    # the cropped training images) and keeps its colours (app/fundus.py). The fundus preparation, which also
    # normalises colour and illumination away, left almost nothing to learn: on the validation part (same split
    # and seed) referable_retinopathy reached ROC AUC 0.549 with it and 0.670 with the disc preparation;
    # retinopathy 0.783 with the disc preparation, and with the fundus one never more than 0.60 by the training
    # log's metric (its test part: 0.485). 96 px: at 128 px the paper's CNN (its Dense 256 on the flattened
    # 8x8x256) exports 25 MB, over the 20 MB a model may take.
    image_size=96,
    colour_mode=ColourMode.RGB,
    enhancement=Enhancement.DISC,
    # Each collection's classes weigh alike: the collections differ in their share of grade 0 (about 44% and 80%),
    # and retinopathy v5, trained without this, learned the collection (test part AUC within the extension's
    # images 0.33, within the original's 0.69: python -m training evaluate retinopathy).
    medscan=replace(MEDSCAN, epochs=30, batch_size=64, augment=True, balance_sites=True),
    source="Messidor-2 (Decencière et al. 2014; adjudicated grades of Abramoff et al. 2013), French ophthalmology "
    "departments",
    caveats=(
        "Macula-centred photographs from French clinics; at a clinic it has not seen, read the leave-one-"
        "collection-out figures.",
        "Exam groups chain consecutive files and may join more than one exam; they never split one.",
    ),
    grade_pattern=ICDR_GRADE,
    sites=MESSIDOR_COLLECTIONS,
    modality=Modality.FUNDUS_PHOTOGRAPH,
)

DISEASES: dict[str, DiseaseConfig] = {
    config.name: config
    for config in (
        DiseaseConfig(
            name="malaria",
            description="Parasitized vs uninfected red blood cells from thin Giemsa-stained blood smears, in colour",
            modality=Modality.BLOOD_SMEAR_CELL,
            # Colour since 2026-11-29: the stain's purple is the parasite, which the grayscale copy threw away.
            image_size=64,
            colour_mode=ColourMode.RGB,
            # A cell has no up or down: trained in a random one of its 8 flips and quarter turns. Grouped 3-fold CV
            # of the colour cells (reports/crossval/malaria-medscan-*64px-20ep.json): ROC AUC 0.9866 +- 0.0030
            # against 0.9818 +- 0.0026 without, higher in all 3 rounds, best epoch 13-16 instead of 5-6; stain
            # jitter gave 0.9836 +- 0.0052 (2 of 3 rounds, within the noise): not used.
            medscan=replace(MEDSCAN, flip_vertical=True, dihedral=True),
            # Flips chosen by grouped 5-fold CV on the grayscale copy (better in all 5 rounds, +0.5 to +1.7
            # points; reports/crossval/malaria-medscan-50px-20ep.json), for 4 network passes an image.
            test_time_flips=("horizontal", "vertical"),
            source="NIH/NLM malaria cell images (Rajaraman et al., 2018), colour originals fitted within 64x64",
            caveats=(
                (
                    "Single cells segmented from thin smears of one hospital (Chittagong), one staining protocol and "
                    "one smartphone-on-microscope setup; other stains and microscopes are unmeasured."
                ),
                (
                    "Input is one segmented red blood cell in colour, not a whole smear; a grayscale cell is answered "
                    "from its gray copy and flagged."
                ),
                "50 of the 201 patients have uninfected cells only.",
            ),
            target="accuracy >= 95.6% (paper)",
            goal="accuracy >= 97.5%, AUC >= 0.995",
            paper=("-", "95.6%"),
        ),
        DiseaseConfig(
            name="pneumonia",
            description="Pneumonia vs normal paediatric chest X-rays",
            modality=Modality.CHEST_XRAY,
            image_size=64,
            colour_mode=ColourMode.GRAYSCALE,
            # Not used: a start pretrained on the other four data sets. Grouped 5-fold CV of a first backbone: ROC
            # AUC 0.9966 vs 0.9948, served at 0.98 97.52 +- 0.83% vs 96.99%, within the noise (paired t 1.0); a
            # second one, made without the other sets' test parts, lost: 95.91 +- 2.23%, AUC 0.9926
            # (reports/crossval/pneumonia-pretrained-*-25ep.json): the gain lies within pretraining's own spread.
            medscan=replace(MEDSCAN, epochs=25, augment=True, flip_horizontal=False),
            source="Kermany et al., Cell 2018 (Guangzhou Women and Children's Medical Center), train part",
            caveats=(
                "Paediatric chest X-rays from one centre; performance on adults or other centres is unknown.",
                "Imbalanced (about 3:1 pneumonia:normal): read sensitivity, specificity and AUC, not accuracy alone.",
                "Images were squashed to 224x224 by their publisher; the model sees them squashed further.",
            ),
            target="accuracy >= 95%",
            goal="accuracy >= 97.5%, AUC >= 0.99",
            paper=("59.5%", "99.5%"),
            # grouped 5-fold CV, served accuracy by target: 0.95 -> 95.30%, 0.97 -> 96.62%, 0.98 -> 96.99%,
            # 0.99 -> 96.15% (python -m training operating-points
            # reports/crossval/pneumonia-medscan-augment-64px-25ep.json)
            screening_sensitivity=0.98,
            # Not adopted, within the noise of 5 folds: CLAHE (--enhancement contrast) 97.34 +- 0.55% at 0.98,
            # better in 3 of 5 rounds, AUC 0.996 vs 0.995; 96 px input 96.75% (reports/crossval/pneumonia-*)
        ),
        DiseaseConfig(
            name="brain_tumor",
            description="Tumour (glioma, meningioma, pituitary) vs no tumour, brain MRI",
            modality=Modality.BRAIN_MRI,
            image_size=96,
            colour_mode=ColourMode.GRAYSCALE,
            medscan=replace(MEDSCAN, epochs=25, augment=True),
            source="Brain Tumor MRI Dataset (M. Nickparvar, Kaggle), both parts, duplicates removed",
            caveats=(
                "Tumour classes (glioma, meningioma, pituitary) are merged into 'infected'; no tumour type is given.",
                "Near-duplicate images share a group and stay on one side of a split.",
            ),
            target="accuracy >= 97%",
            goal="accuracy >= 98.5%",
            paper=("95.5%", "-"),
            # grouped 5-fold CV, served accuracy by target: 0.95 -> 96.00%, 0.97 -> 97.13%, 0.98 -> 97.53%,
            # 0.99 -> 96.53%; horizontal flips add nothing (97.49% at 0.98)
            # (python -m training operating-points reports/crossval/brain_tumor-medscan-augment-96px-25ep.json)
            screening_sensitivity=0.98,
        ),
        DiseaseConfig(
            name="breast_cancer",
            description="Malignant vs benign or normal breast ultrasound",
            modality=Modality.BREAST_ULTRASOUND,
            image_size=64,
            colour_mode=ColourMode.GRAYSCALE,
            # The recipe chosen on BUSI alone by grouped 5-fold CV: from a start pretrained on the other four
            # data sets' non-test parts 85.44 +- 3.01%, AUC 0.879, against 83.31 +- 3.55%, AUC 0.849 from scratch
            # (reports/crossval/breast_cancer-pretrained-medscan-augment-64px-60ep-busi-only.json). Since 2026-11-29 it
            # trains on BUSI and BUS-BRA; leave-one-site-out figures are in the card (python -m training cross-site).
            medscan=replace(MEDSCAN, epochs=60, batch_size=32, augment=True, pretrained_start=True),
            source="BUSI (Al-Dhabyani et al., Data in Brief 2020, Cairo) and BUS-BRA (Gomez-Flores et al., Medical "
            "Physics 2024, Brazil: biopsy-proven, four scanners)",
            caveats=(
                "Breast ultrasound (BUSI, BUS-BRA), not histopathology or mammography.",
                (
                    "Two hospitals and five scanners; at a hospital it has not seen, read the leave-one-site-out "
                    "figures, not the test part."
                ),
                (
                    "Some BUS-BRA images carry burned-in calipers and text; the card reports how much the answer moves "
                    "when they are painted out."
                ),
                "'uninfected' means benign or normal tissue, not 'no finding'.",
            ),
            sites=(SiteRule("BUS-BRA (Brazil)", r"^busbra_"), SiteRule("BUSI (Egypt)", "")),
            target="AUC >= 0.90",
            goal="AUC >= 0.93 on every held-out site; specificity >= 0.60 at sensitivity >= 0.95",
            paper=("88.1% (CNN+VGG16)", "92.2%"),
        ),
        replace(
            MESSIDOR_2,
            name="retinopathy",
            description="Diabetic retinopathy of any grade (ICDR >= 1) vs none, colour fundus photographs",
            caveats=(
                "'infected' means diabetic retinopathy of any grade (ICDR 1-4); grade 1 (microaneurysms only) is "
                "hard to see at 96 px. For the referral target (grade >= 2) use referable_retinopathy.",
                *MESSIDOR_2.caveats,
            ),
            target="AUC >= 0.90",
            goal="AUC >= 0.90 within Messidor-2, >= 0.85 on the other collection",
            paper=("87.2%", "95.6%"),
        ),
        replace(
            MESSIDOR_2,
            name="referable_retinopathy",
            description="Referable diabetic retinopathy (ICDR grade >= 2: moderate or worse) vs grades 0-1, colour "
            "fundus photographs",
            # The retinopathy images, labelled from each one's adjudicated grade in the manifest: the referral
            # target of screening programmes.
            labels=LabelRule(images_from="retinopathy", pattern=ICDR_GRADE, infected_from=2),
            source=MESSIDOR_2.source + "; label = ICDR grade >= 2 from each image's grade",
            caveats=(
                "'infected' means referable retinopathy (ICDR grade 2-4); grade 1 counts as 'uninfected', as in "
                "referral programmes. Macular oedema alone does not make an image referable here.",
                *MESSIDOR_2.caveats,
            ),
            target="AUC >= 0.93",
            goal="AUC >= 0.93; sensitivity >= 0.90 at specificity >= 0.80",
        ),
    )
}


def get_disease(name: str) -> DiseaseConfig:
    try:
        return DISEASES[name]
    except KeyError:
        raise ValueError(f"unknown disease {name!r}; known: {', '.join(DISEASES)}") from None


CONFIG_FILE = "disease.json"  # beside the images: <data>/<disease>/disease.json
# A disease we have not tuned: the paper's input range midpoint, light augmentation, a longer run.
GENERIC_RECIPE = replace(MEDSCAN, epochs=30, augment=True)
# disease.json keys: these set the recipe, the others the disease's record.
RECIPE_KEYS = frozenset(
    {
        "epochs",
        "batch_size",
        "learning_rate",
        "augment",
        "flip_horizontal",
        "flip_vertical",
        "stain_jitter",
        "dihedral",
        "pretrained_start",
        "balance_sites",
        "frozen_backbone",
    }
)
CONFIG_KEYS = RECIPE_KEYS | {
    "description", "source", "image_size", "colour_mode", "enhancement", "caveats", "target",
    "screening_sensitivity", "test_time_flips", "labels", "grade_pattern", "sites", "modality",
}  # fmt: skip


@dataclass(frozen=True)
class DiseaseFlags:
    """What the command line says about a disease; None: not said."""

    image_size: int | None = None
    colour_mode: str | None = None
    enhancement: str | None = None
    description: str | None = None
    caveats: tuple[str, ...] = ()


def describe_disease(name: str, data_dir: Path, flags: DiseaseFlags = DiseaseFlags()) -> DiseaseConfig:
    """A known disease keeps its tuned defaults; any other is described by `<data>/<name>/disease.json`
    and flags (flags win), with generic defaults for the rest, so a lab trains its own without code."""
    if not DISEASE_NAME.fullmatch(name):
        raise ValueError(
            f"disease names are lower-case letters, digits and underscores, starting with a letter: {name!r}"
        )
    config = DISEASES.get(name) or DiseaseConfig(
        name=name,
        description=f"{name}: infected vs uninfected (user-supplied data set)",
        image_size=64,
        colour_mode=_colour_mode_of(data_dir / name),
        medscan=GENERIC_RECIPE,
        source=str(data_dir / name),
        caveats=("Trained on a user-supplied data set that MedScan has not reviewed; read its own documentation.",),
        described_by="generic defaults",
    )
    sources = [config.described_by]
    file = data_dir / name / CONFIG_FILE
    if file.is_file():
        config = _apply_file(config, file)
        sources.append(str(file))
        if name not in DISEASES and config.labels and '"colour_mode"' not in file.read_text(encoding="utf-8"):
            config = replace(config, colour_mode=_colour_mode_of(data_dir / config.images_folder))
    said = {
        key: value
        for key, value in (
            ("image_size", flags.image_size),
            ("description", flags.description),
            ("colour_mode", flags.colour_mode and ColourMode(flags.colour_mode)),
            ("enhancement", flags.enhancement and Enhancement(flags.enhancement)),
        )
        if value is not None
    }
    if said or flags.caveats:
        config = replace(config, **said, caveats=config.caveats + tuple(flags.caveats))
        sources.append("command-line flags")
    return replace(config, described_by=" + ".join(sources))


def _apply_file(config: DiseaseConfig, file: Path) -> DiseaseConfig:
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{file} is not readable JSON: {error}") from None
    if not isinstance(values, dict) or set(values) - CONFIG_KEYS:
        unknown = sorted(set(values) - CONFIG_KEYS) if isinstance(values, dict) else values
        raise ValueError(f"{file}: unknown keys {unknown}; allowed: {', '.join(sorted(CONFIG_KEYS))}")
    recipe = replace(config.medscan, **{k: v for k, v in values.items() if k in RECIPE_KEYS})
    fields = {k: v for k, v in values.items() if k not in RECIPE_KEYS}
    if "colour_mode" in fields:
        fields["colour_mode"] = ColourMode(fields["colour_mode"])
    if "enhancement" in fields:
        fields["enhancement"] = Enhancement(fields["enhancement"])
    if "modality" in fields:
        fields["modality"] = Modality(fields["modality"])
    if "labels" in fields:
        fields["labels"] = _label_rule(fields["labels"], file)
    if "sites" in fields:
        fields["sites"] = _site_rules(fields["sites"], file)
    for key in ("caveats", "test_time_flips"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return replace(config, medscan=recipe, **fields)


def _label_rule(values: object, file: Path) -> LabelRule:
    """`"labels": {"images_from": "<folder>", "pattern": "<regex with one group>", "infected_from": <number>,
    "column": "note"}`: labels read from the manifest, for example a grade in each image's note."""
    keys = {"images_from", "pattern", "infected_from", "column"}
    if (
        not isinstance(values, dict)
        or set(values) - keys
        or not {"images_from", "pattern", "infected_from"} <= set(values)
    ):
        raise ValueError(f"{file}: 'labels' takes images_from, pattern and infected_from (and column); got {values!r}")
    try:
        rule = LabelRule(
            images_from=str(values["images_from"]),
            pattern=str(values["pattern"]),
            infected_from=float(values["infected_from"]),
            column=str(values.get("column", "note")),
        )
        if re.compile(rule.pattern).groups < 1:
            raise ValueError("the pattern needs a group that captures the number")
    except (TypeError, re.error, ValueError) as error:
        raise ValueError(f"{file}: 'labels' is not usable: {error}") from None
    return rule


def other_diseases(data_dir: Path, name: str) -> list[str]:
    """The diseases whose images a model's out-of-distribution check must flag: every known one but itself and
    those trained on its own images (a label rule over the same folder is no other organ)."""
    own = describe_disease(name, data_dir).images_folder
    return [other for other in sorted(DISEASES) if other != name and DISEASES[other].images_folder != own]


def _site_rules(values: object, file: Path) -> tuple[SiteRule, ...]:
    """`"sites": [{"name": "...", "pattern": "<regex>", "column": "file" or "note"}, ...]`."""
    try:
        rules = tuple(SiteRule(**rule) for rule in values)  # type: ignore[union-attr]
        for rule in rules:
            re.compile(rule.pattern)
            if rule.column not in ("file", "note"):
                raise ValueError(f"column must be 'file' or 'note', not {rule.column!r}")
    except (TypeError, re.error, ValueError) as error:
        raise ValueError(f"{file}: 'sites' is a list of {{name, pattern, column}}: {error}") from None
    return rules


def disease_samples(data_dir: Path, name: str) -> list[Sample]:
    """A disease's labelled images: its class folders, or its label rule's (built in or in disease.json)."""
    return find_samples(data_dir, name, describe_disease(name, data_dir).labels)


def _colour_mode_of(folder: Path, sample: int = 20) -> ColourMode:
    """RGB if any of the first images has colour in it (channels that differ), else grayscale."""
    from PIL import Image

    files = sorted(p for p in folder.glob("*/*") if p.is_file())[:sample]
    for path in files:
        try:
            with Image.open(path) as image:
                if image.mode in {"RGB", "RGBA", "P", "CMYK", "YCbCr"}:
                    rgb = image.convert("RGB")
                    red, green, blue = rgb.split()
                    if red.tobytes() != green.tobytes() or green.tobytes() != blue.tobytes():
                        return ColourMode.RGB
        except OSError:
            continue
    return ColourMode.GRAYSCALE

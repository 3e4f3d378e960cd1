"""Per-disease settings, one record per disease: input size and colour mode (chosen per data set), the
tuned recipe, source, caveats and target. Every built-in disease is a data file, `training/diseases/<name>.json`,
of the schema a lab's `disease.json` beside its images uses; flags win over both. Why each built-in recipe is
what it is, with the measurements, is in docs/models.md."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from app.contract.modality import Modality
from app.contract.model_store import DISEASE_NAME
from app.contract.preprocessing import ColourMode, Enhancement, InputSpec
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
    # Random gain and gamma per image, as another scanner's settings would render the same tissue (any colour mode).
    intensity_jitter: bool = False
    # Zoom width and height apart (width over height 0.64-1.44), as frames squashed to a square from another
    # aspect would distort the same lesion (BUSI's publisher squashed its frames; BUS-BRA's keep theirs).
    aspect_jitter: bool = False
    # Start the paper's CNN from a backbone pretrained on the other data sets (training/networks/pretrain.py), made
    # on first use and kept in backbones/; for the small sets, whose own images are too few for features.
    pretrained_start: bool = False
    # Weigh each (site, class) cell alike (the disease's `sites`), so that no site stands for a class.
    balance_sites: bool = False
    # Keep an ImageNet backbone frozen and fit only a logistic-regression head on its pooled features, computed
    # once per image (training/networks/frozen_head.py); with `augment`, once per flip too.
    frozen_backbone: bool = False
    # Train only the layers above this one, on its outputs computed once per image and flip; with
    # frozen_backbone, after the head's logistic regression (training/networks/top_finetune.py).
    fine_tune_from: str | None = None
    # With a frozen backbone and labels read from a number (e.g. a grade >= 2): one regression per level here
    # (e.g. grade >= 1, 2, 3), their logits summed into the head (training/networks/frozen_head.py).
    ordinal_levels: tuple[float, ...] = ()
    # Train from kernels rounded as a version stored at these bits keeps them (16: float16; 8: int8 per output
    # channel; the head stays 32), and store the version so: a frozen backbone's head then learns the features
    # the export computes (training/networks/stored_kernels.py).
    kernel_bits: int = 32

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
    # The kind of image the model reads (app/contract/modality.py): the service's modality check compares it with the
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


DISEASES_DIR = Path(__file__).resolve().parent.parent / "diseases"  # training/diseases/<name>.json


def _builtin(name: str) -> DiseaseConfig:
    """A disease MedScan ships: its data file, of a lab's `disease.json` schema, over MedScan's recipe; `like`
    starts from another built-in disease (the two Messidor-2 models share images, input, recipe and sites)."""
    file = DISEASES_DIR / f"{name}.json"
    like = _read_json(file).get("like")
    base = (
        _builtin(_known_like(like, file))
        if like
        else DiseaseConfig(name=name, description="", image_size=0, colour_mode=ColourMode.GRAYSCALE, medscan=MEDSCAN,
                           source="")
    )  # fmt: skip
    config = _apply_file(replace(base, name=name), file)
    if config.image_size <= 0 or not config.description or not config.source:
        raise ValueError(f"{file}: a built-in disease names its description, source, image_size and colour_mode")
    return config


def _known_like(like: object, file: Path) -> str:
    if not isinstance(like, str) or not (DISEASES_DIR / f"{like}.json").is_file() or like == file.stem:
        known = ", ".join(path.stem for path in sorted(DISEASES_DIR.glob("*.json")))
        raise ValueError(f"{file}: 'like' names another built-in disease ({known}), not {like!r}")
    return like


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
        "intensity_jitter",
        "aspect_jitter",
        "dihedral",
        "pretrained_start",
        "balance_sites",
        "frozen_backbone",
        "fine_tune_from",
        "ordinal_levels",
    }
)
CONFIG_KEYS = RECIPE_KEYS | {
    "description", "source", "image_size", "colour_mode", "enhancement", "caveats", "target", "goal", "paper",
    "screening_sensitivity", "test_time_flips", "labels", "grade_pattern", "sites", "modality", "like",
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
        like = _read_json(file).get("like")
        if like is not None and name not in DISEASES:  # a lab's disease that starts from one of ours
            like = _known_like(like, file)
            config = replace(DISEASES[like], name=name, described_by=f"MedScan's {like}")
            sources = [config.described_by]
        config = _apply_file(config, file)
        sources.append(str(file))
        if name not in DISEASES and config.labels and '"colour_mode"' not in file.read_text(encoding="utf-8"):
            config = replace(config, colour_mode=_colour_mode_of(data_dir / config.images_folder))
    said: dict[str, Any] = {
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


def _read_json(file: Path) -> dict:
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{file} is not readable JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{file}: a disease file is one JSON object, not {type(values).__name__}")
    return values


def _apply_file(config: DiseaseConfig, file: Path) -> DiseaseConfig:
    values = _read_json(file)
    values.pop("like", None)  # read by _builtin
    if set(values) - CONFIG_KEYS:
        unknown = sorted(set(values) - CONFIG_KEYS)
        raise ValueError(f"{file}: unknown keys {unknown}; allowed: {', '.join(sorted(CONFIG_KEYS))}")
    recipe = replace(config.medscan, **{k: v for k, v in values.items() if k in RECIPE_KEYS})
    if "ordinal_levels" in values:
        recipe = replace(recipe, ordinal_levels=tuple(float(level) for level in values["ordinal_levels"]))
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
    for key in ("caveats", "test_time_flips", "paper"):
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


def other_diseases(config: DiseaseConfig) -> list[str]:
    """The diseases whose images a model's out-of-distribution check must flag: every known one but itself and
    those trained on its own images (a label rule over the same folder is no other organ)."""
    own = config.images_folder
    return [other for other in sorted(DISEASES) if other != config.name and DISEASES[other].images_folder != own]


def _site_rules(values: object, file: Path) -> tuple[SiteRule, ...]:
    """`"sites": [{"name": "...", "pattern": "<regex>", "column": "file" or "note"}, ...]`."""
    try:
        if not isinstance(values, list):
            raise TypeError(f"a list, not {type(values).__name__}")
        rules = tuple(SiteRule(**rule) for rule in values)
        for rule in rules:
            re.compile(rule.pattern)
            if rule.column not in ("file", "note"):
                raise ValueError(f"column must be 'file' or 'note', not {rule.column!r}")
    except (TypeError, re.error, ValueError) as error:
        raise ValueError(f"{file}: 'sites' is a list of {{name, pattern, column}}: {error}") from None
    return rules


def samples_of(config: DiseaseConfig, data_dir: Path) -> list[Sample]:
    """A disease's labelled images: its class folders, or its label rule's (built in or in disease.json)."""
    return find_samples(data_dir, config.name, config.labels)


def disease_samples(data_dir: Path, name: str) -> list[Sample]:
    return samples_of(describe_disease(name, data_dir), data_dir)


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


# Built last: the records need the file schema's readers above.
DISEASES: dict[str, DiseaseConfig] = {path.stem: _builtin(path.stem) for path in sorted(DISEASES_DIR.glob("*.json"))}

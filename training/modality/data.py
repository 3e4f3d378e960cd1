"""The images the modality check is fitted and measured on, each with its kind.

Every data set in the data folder gives its kind (the disease's `modality`): up to `per_kind` images drawn
from the non-test parts of its diseases' default splits to fit on, and its test parts to measure on, so that
no image a disease model is measured on shapes the check either. A kind shared by two diseases (retinopathy
and referable_retinopathy read the same photographs) is drawn once. "Anything else" is synthetic images
(training/modality/synthetic.py) and scikit-image's bundled photographs, some to fit on and the others to
measure on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.contract.modality import Modality
from app.contract.model_card import SplitSpec
from training.data.config import DISEASES, SiteRule, describe_disease, site_of
from training.data.samples import Sample, diseases_in, find_samples, manifest_notes, split_as
from training.modality.synthetic import synthetic_images

# scikit-image's bundled photographs (no download): the first fit the check, the others only measure it.
PHOTOGRAPHS_TO_FIT = ("astronaut", "coffee", "rocket", "horse", "brick", "page", "camera", "moon")
PHOTOGRAPHS_TO_MEASURE = ("chelsea", "stereo_motorcycle", "hubble_deep_field", "colorwheel", "clock", "coins",
                          "text", "grass", "gravel", "logo", "immunohistochemistry")  # fmt: skip


@dataclass(frozen=True)
class KindImage:
    """One image of a known kind: a file, or an image made in memory."""

    kind: Modality
    source: str  # the file, or what made the image
    site: str = ""  # the collection or hospital, where the data set names them
    make: Callable[[], Image.Image] | None = None

    def open(self) -> Image.Image:
        if self.make is not None:
            return self.make()
        with Image.open(self.source) as image:
            image.load()
            return image


@dataclass(frozen=True)
class KindSets:
    fit: list[KindImage]
    measure: list[KindImage]


def _draw(samples: list[Sample], count: int, rng: np.random.Generator) -> list[Sample]:
    ordered = sorted(samples, key=lambda sample: str(sample.path))
    if len(ordered) <= count:
        return ordered
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=count, replace=False))]


def medical_images(data_dir: Path, per_kind: int, measure_per_kind: int, seed: int) -> KindSets:
    """Each data set's kind: images to fit on from its non-test part, to measure on from its test part."""
    rng = np.random.default_rng(seed)
    fit: list[KindImage] = []
    measure: list[KindImage] = []
    folders_done: set[str] = set()
    for disease in diseases_in(data_dir):
        config = describe_disease(disease, data_dir)
        if config.modality is Modality.OTHER or config.images_folder in folders_done:
            continue
        folders_done.add(config.images_folder)
        split = split_as(find_samples(data_dir, disease, config.labels), SplitSpec())
        for part, samples, count in (
            (fit, split.train + split.validation, per_kind),
            (measure, split.test, measure_per_kind),
        ):
            drawn = _draw(samples, count, rng)
            sites = _sites(data_dir, drawn, config.sites)
            part += [KindImage(config.modality, str(s.path), site) for s, site in zip(drawn, sites, strict=True)]
    return KindSets(fit=fit, measure=measure)


def _sites(data_dir: Path, samples: list[Sample], rules: tuple[SiteRule, ...]) -> list[str]:
    if not rules:
        return [""] * len(samples)
    return [site_of(s, note, rules) for s, note in zip(samples, manifest_notes(data_dir, samples), strict=True)]


def _constant(image: Image.Image) -> Callable[[], Image.Image]:
    return lambda: image


def other_images(synthetic_fit: int, synthetic_measure: int, seed: int) -> KindSets:
    """Synthetic images and photographs, none of them medical."""
    import skimage.data

    def photograph(name: str) -> Callable[[], Image.Image]:
        def make() -> Image.Image:
            loaded = getattr(skimage.data, name)()
            return Image.fromarray(loaded[0] if isinstance(loaded, tuple) else loaded)

        return make

    def synthetic(count: int, seed: int, tag: str) -> list[KindImage]:
        return [
            KindImage(Modality.OTHER, f"synthetic:{tag}:{i}", make=_constant(image))
            for i, image in enumerate(synthetic_images(count, seed))
        ]

    fit = synthetic(synthetic_fit, seed, "fit")
    fit += [KindImage(Modality.OTHER, f"skimage:{n}", make=photograph(n)) for n in PHOTOGRAPHS_TO_FIT]
    measure = synthetic(synthetic_measure, seed + 1, "measure")
    measure += [KindImage(Modality.OTHER, f"skimage:{n}", make=photograph(n)) for n in PHOTOGRAPHS_TO_MEASURE]
    return KindSets(fit=fit, measure=measure)


def known_kinds() -> list[Modality]:
    """The kinds of the built-in diseases, in a fixed order, then OTHER: the check's classes."""
    kinds = sorted({config.modality for config in DISEASES.values()} - {Modality.OTHER}, key=list(Modality).index)
    return [*kinds, Modality.OTHER]

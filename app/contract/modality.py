"""What kind of image this is: the modalities MedScan knows, how an image is prepared for the modality check,
and the check's card (`models/_modality/<version>/metadata.json`). Shared by training and the service.

One check for the whole service answers "wrong kind of image" (another organ, a photograph, a document);
each disease model's own feature distance then only says "unlike my training sites". The image is fitted
whole into a square on black (its aspect kept, nothing cropped), so a camera's uncropped 3:2 fundus frame and
a cropped square one look alike to it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

MODALITY_DIR = "_modality"  # under the models folder; not a disease name, so the registry passes it by
SIDE = 224


class Modality(StrEnum):
    FUNDUS_PHOTOGRAPH = "fundus_photograph"
    CHEST_XRAY = "chest_xray"
    BRAIN_MRI = "brain_mri"
    BREAST_ULTRASOUND = "breast_ultrasound"
    BLOOD_SMEAR_CELL = "blood_smear_cell"
    OTHER = "other"  # photographs, documents, drawings, noise: anything else

    @property
    def short(self) -> str:
        """The kind in a table's few words."""
        words = self.words.removeprefix("a colour ").removeprefix("a ")
        return words.removesuffix(" slice").removesuffix(" image")

    @property
    def words(self) -> str:
        return {
            Modality.FUNDUS_PHOTOGRAPH: "a colour fundus photograph",
            Modality.CHEST_XRAY: "a chest X-ray",
            Modality.BRAIN_MRI: "a brain MRI slice",
            Modality.BREAST_ULTRASOUND: "a breast ultrasound image",
            Modality.BLOOD_SMEAR_CELL: "a blood-smear cell",
            Modality.OTHER: "something other than the medical images MedScan knows",
        }[self]


def modality_pixels(image: Image.Image) -> np.ndarray:
    """The image fitted whole into SIDE x SIDE RGB on black, aspect kept: uint8 SIDE x SIDE x 3."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(ImageOps.pad(rgb, (SIDE, SIDE), method=Image.Resampling.BILINEAR, color=(0, 0, 0)))


class ModalityFigures(BaseModel):
    """How often images of one kind, never used to fit the check, are answered as the right kind."""

    n_images: int
    recognised: float = Field(description="share answered as their own kind")
    source: str


class ModalityCard(BaseModel):
    """The modality check's card: classes in output order, its input, figures, and what fitted it."""

    name: str = "modality"
    version: int
    classes: list[Modality]
    input_side: int = SIDE
    preparation: str = "fitted whole into a 224 x 224 square on black (aspect kept), RGB, float32 / 255"
    architecture: str
    minimum_probability: float = Field(
        description="an image is of a kind when the check gives that kind at least this probability"
    )
    figures: dict[str, ModalityFigures] = {}
    training: dict[str, object] = {}
    created: str = ""

    @classmethod
    def read(cls, folder: Path) -> ModalityCard:
        return cls.model_validate_json((folder / "metadata.json").read_text(encoding="utf-8"))

"""The modality check as the service runs it: the latest `<models>/_modality/<version>/`, loaded at start-up.

It answers, for each image, the probability of each kind (app/contract/modality.py). A disease model's card names the
kind it reads; an image whose probability for that kind is below the check's minimum is the wrong kind of
image for that model, whatever the model's own feature distance says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.contract.modality import MODALITY_DIR, SIDE, Modality, ModalityCard
from app.contract.model_store import latest_version
from app.contract.savedmodel import SERVE, ModelLoadError

log = logging.getLogger("medscan")
CHUNK = 32  # images a call: a request's most (MEDSCAN_MAX_IMAGES_PER_REQUEST's default)


@dataclass(frozen=True)
class KindAnswer:
    """What the check says about one image, for the model that reads `expected`."""

    kind: Modality  # the most probable kind
    expected: Modality
    probability: float  # of the expected kind
    minimum: float

    @property
    def wrong_kind(self) -> bool:
        return self.probability < self.minimum


@dataclass
class ModalityCheck:
    card: ModalityCard
    path: Path
    _serve: Any
    _input_name: str
    _graph: object  # the loaded object graph, which the signature needs alive

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N x 224 x 224 x 3 (modality.modality_pixels) -> N x kinds, CHUNK images a call (memory grows with
        the call: 600 images in one call added 5.7 GB). Blocking: off the event loop."""
        if len(pixels) == 0:
            return np.empty((0, len(self.card.classes)), np.float32)
        return np.concatenate([self._call(pixels[start : start + CHUNK]) for start in range(0, len(pixels), CHUNK)])

    def _call(self, pixels: np.ndarray) -> np.ndarray:
        batch = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
        (values,) = self._serve(**{self._input_name: batch}).values()
        return values.numpy()

    def answers(self, pixels: np.ndarray, expected: Modality) -> list[KindAnswer]:
        if len(pixels) == 0:
            return []
        probabilities = self.probabilities(pixels)
        column = self.card.classes.index(expected)
        return [
            KindAnswer(
                kind=self.card.classes[int(np.argmax(row))],
                expected=expected,
                probability=float(row[column]),
                minimum=self.card.minimum_probability,
            )
            for row in probabilities
        ]

    def checks(self, modality: Modality | None) -> bool:
        """Whether it can judge images for a model of this kind (a kind it knows, and not 'other')."""
        return modality is not None and modality is not Modality.OTHER and modality in self.card.classes


def load_or_warn(models_dir: Path) -> ModalityCheck | None:
    """The check, or None with an error logged: a broken check must not keep the models from serving; their own
    feature distances then say "wrong kind of image" as before it existed."""
    try:
        return load_modality_check(models_dir)
    except ModelLoadError as error:
        log.error("modality check not loaded, answering by each model's own distance: %s", error)
        return None


def load_modality_check(models_dir: Path) -> ModalityCheck | None:
    """The latest version of the check; None where the models folder has none. Raises ModelLoadError."""
    import tensorflow as tf  # here, so that importing app never starts TensorFlow

    version = latest_version(models_dir, MODALITY_DIR)
    if version is None:
        return None
    path = models_dir / MODALITY_DIR / str(version)
    try:
        card = ModalityCard.read(path)
        loaded = tf.saved_model.load(str(path))
        function = loaded.signatures[SERVE]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
        raise ModelLoadError(f"{path}: not a usable modality check: {error}") from error
    (input_name,) = list(function.structured_input_signature[1])
    check = ModalityCheck(card, path, function, input_name, loaded)
    probe = check.probabilities(np.zeros((1, SIDE, SIDE, 3), np.uint8))
    if probe.shape != (1, len(card.classes)):
        raise ModelLoadError(f"{path}: answers {probe.shape[1:]} values, its card lists {len(card.classes)} kinds")
    return check

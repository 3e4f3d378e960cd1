"""Loading an exported model version and running it: shared by the service and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.contract.model_card import ModelCard, read_card
from app.contract.model_store import METADATA_FILE
from app.contract.scoring import log_odds_from_scores

# The signatures an exported version holds (training/networks/servable.py writes them):
SERVE = "serving_default"  # image -> N x 2 sigmoid scores: the paper's output, as TF Serving serves it
ANALYSE = "analyse"  # image -> scores, log_odds (N), ood_distance (N): what every MedScan route uses
EXPLAIN = "explain"  # image -> gradcam (N x H x W, signed): Grad-CAM of the infected-minus-uninfected logit


class ModelLoadError(Exception):
    """A model version folder that cannot be served; the message says why."""


class ExplanationUnavailable(Exception):
    """The version was exported without the Grad-CAM signature."""


@dataclass(frozen=True)
class ImageOutputs:
    """What the model says about one image, before calibration and threshold."""

    log_odds: float  # log(s_infected / s_uninfected)
    ood_distance: float | None  # None where the version has no out-of-distribution statistics


@dataclass(frozen=True)
class _Signature:
    function: Any
    input_name: str

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # By keyword: a positional call first fails TensorFlow's structured binding, whose error
        # message formats the whole batch as text (measured: 3.3 -> 1.9 ms per call at batch 1).
        outputs = self.function(**{self.input_name: np.asarray(batch, dtype=np.float32)})
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass
class LoadedModel:
    card: ModelCard
    path: Path
    _serve: _Signature
    _analyse: _Signature | None
    _explain: _Signature | None
    _graph: object  # the loaded object graph, which the signatures need alive

    @property
    def can_explain(self) -> bool:
        return self._explain is not None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x H x W x C -> N x 2 sigmoid scores. Blocking: call it off the event loop."""
        (scores,) = self._serve(batch).values()
        return scores

    def analyse(self, batch: np.ndarray) -> list[ImageOutputs]:
        """float32 N x H x W x C -> one ImageOutputs per image, in one model call. Blocking."""
        if self._analyse is None:  # a version exported before the analyse signature existed
            log_odds = log_odds_from_scores(self.predict(batch))
            return [ImageOutputs(float(value), None) for value in log_odds]
        outputs = self._analyse(batch)
        return [
            ImageOutputs(float(odds), float(distance))
            for odds, distance in zip(outputs["log_odds"], outputs["ood_distance"], strict=True)
        ]

    def explain(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x H x W x C -> N x H x W signed Grad-CAM maps at the input resolution. Blocking."""
        if self._explain is None:
            raise ExplanationUnavailable(
                f"version {self.card.version} of {self.card.disease} was exported without the Grad-CAM signature"
            )
        return self._explain(batch)["gradcam"]


def load_model(path: Path) -> LoadedModel:
    """Load `<models>/<disease>/<version>/` (SavedModel + metadata.json) and check they agree."""
    import tensorflow as tf  # imported here so that importing app never starts TensorFlow

    metadata = path / METADATA_FILE
    try:
        card = read_card(metadata)
    except FileNotFoundError as error:
        raise ModelLoadError(f"{metadata} is missing") from error
    except OSError as error:
        raise ModelLoadError(f"{metadata} cannot be read: {error}") from error
    except ValueError as error:
        raise ModelLoadError(f"{metadata} is not a valid model card: {error}") from error
    try:
        loaded = tf.saved_model.load(str(path))
        signatures = dict(loaded.signatures)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
        raise ModelLoadError(f"{path} is not a loadable SavedModel: {error}") from error
    if SERVE not in signatures:
        raise ModelLoadError(f"{path}: the SavedModel has no {SERVE!r} signature")
    found = {name: _signature(path, name, signatures[name]) for name in (SERVE, ANALYSE, EXPLAIN) if name in signatures}
    model = LoadedModel(
        card=card,
        path=path,
        _serve=found[SERVE],
        _analyse=found.get(ANALYSE),
        _explain=found.get(EXPLAIN),
        _graph=loaded,
    )
    _check_shapes(model)
    return model


def _signature(path: Path, name: str, function: Any) -> _Signature:
    inputs = list(function.structured_input_signature[1])
    if len(inputs) != 1:
        raise ModelLoadError(f"{path}: the {name!r} signature takes {len(inputs)} inputs, not one image batch")
    return _Signature(function, inputs[0])


def _check_shapes(model: LoadedModel) -> None:
    spec = model.card.input.spec()
    probe = np.zeros((1, *spec.shape), dtype=np.float32)
    try:
        scores = model.predict(probe)
    except Exception as error:  # any TF failure here means the card and graph disagree
        raise ModelLoadError(f"{model.path}: model rejects its card's input {spec.shape}: {error}") from error
    if scores.shape != (1, len(model.card.classes)):
        raise ModelLoadError(
            f"{model.path}: model returns shape {scores.shape[1:]}, card lists {len(model.card.classes)} classes"
        )
    try:
        model.analyse(probe)
    except Exception as error:
        raise ModelLoadError(f"{model.path}: the {ANALYSE!r} signature fails on its card's input: {error}") from error
    if (model.card.out_of_distribution is None) != (model._analyse is None):
        raise ModelLoadError(f"{model.path}: the card and the SavedModel disagree on out-of-distribution statistics")

"""`python -m training modality`: fit, measure and export the modality check.

Frozen EfficientNet-Lite0 ImageNet features (computed once per image view) with a multinomial logistic
regression over the kinds. Each image to fit on is seen as it is and framed as a camera frames it (placed on
a 3:2 black frame), so an uncropped photograph is no stranger than a cropped one. Measured on images never
fitted on: each data set's test part (also framed at 3:2), synthetic images and photographs; and, with the
fundus photographs of one collection left out of fitting, on that collection: a clinic whose camera the check
has never seen.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from app.contract.modality import MODALITY_DIR, SIDE, Modality, ModalityCard, ModalityFigures
from app.contract.model_store import METADATA_FILE, next_version
from app.contract.preprocessing import ColourMode, kind_input, to_colour_mode
from app.contract.savedmodel import SERVE
from training.modality.data import KindImage, known_kinds, medical_images, other_images
from training.networks.efficientnet_lite import (
    ARCH,
    FEATURES,
    efficientnet_lite0,
    imagenet_network,
    scale_for_imagenet,
)
from training.networks.servable import write_signatures

log = logging.getLogger("training")
MINIMUM_PROBABILITY = 0.5  # below it for a model's kind: "not the kind of image this model reads"
CAMERA_ASPECT = 1.5  # 3:2, as fundus cameras (and most others) write their frames
STRENGTHS = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class ModalityOptions:
    data_dir: Path
    models_dir: Path = Path("models")
    report: Path | None = Path("reports/modality.json")
    per_kind: int = 1200
    measure_per_kind: int = 600
    synthetic_fit: int = 600
    synthetic_measure: int = 300
    seed: int = 42
    export: bool = True


def camera_frame(image: Image.Image) -> Image.Image:
    """The image on a 3:2 black frame as wide as a camera would make it (a wider image is left as it is)."""
    rgb = to_colour_mode(image, ColourMode.RGB)
    width = max(rgb.width, round(rgb.height * CAMERA_ASPECT))
    frame = Image.new("RGB", (width, rgb.height))
    frame.paste(rgb, ((width - rgb.width) // 2, 0))
    return frame


class FeatureExtractor:
    """Pooled EfficientNet-Lite0 ImageNet features of prepared 224 px images."""

    def __init__(self) -> None:
        network = imagenet_network(include_top=False, size=SIDE)
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(network.output)
        self.network = network
        self.model = keras.Model(network.inputs, pooled)

    def __call__(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 N x 224 x 224 x 3 -> N x 1280, a batch at a time (float copies of all N would take GBs). 64 a call
        took the process to 5.7 GB, 32 to 3.4 GB, at the same speed (192 images: 4.8-5.3 s either way)."""
        rows = [
            self.model(scale_for_imagenet(pixels[start : start + batch_size] / 255.0), training=False).numpy()
            for start in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, FEATURES))


def prepared(images: list[KindImage], framed: bool) -> np.ndarray:
    """N x 224 x 224 x 3 uint8: each image as the service prepares it, or framed at 3:2 first."""
    out = np.empty((len(images), SIDE, SIDE, 3), np.uint8)
    for index, item in enumerate(images):
        image = item.open()
        out[index] = kind_input(camera_frame(image) if framed else image)
    return out


@dataclass
class Features:
    images: list[KindImage]
    plain: np.ndarray  # N x F
    framed: np.ndarray  # N x F, at the camera's aspect

    @property
    def kinds(self) -> np.ndarray:
        return np.array([item.kind.value for item in self.images])


def features_of(images: list[KindImage], extractor: FeatureExtractor) -> Features:
    started = time.perf_counter()
    features = Features(images, extractor(prepared(images, False)), extractor(prepared(images, True)))
    log.info("modality features of %d images (two views) in %.0f s", len(images), time.perf_counter() - started)
    return features


@dataclass(frozen=True)
class KindHead:
    """Multinomial logistic regression on standardised features, written as one Dense softmax layer."""

    classes: list[Modality]
    kernel: np.ndarray  # F x K, on raw features
    bias: np.ndarray  # K

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def fit_head(fit: Features, classes: list[Modality], seed: int) -> KindHead:
    from sklearn.linear_model import LogisticRegressionCV

    features = np.concatenate([fit.plain, fit.framed])
    kinds = np.concatenate([fit.kinds, fit.kinds])
    center, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    targets = np.array([[c.value for c in classes].index(kind) for kind in kinds])
    head = LogisticRegressionCV(Cs=list(STRENGTHS), cv=3, class_weight="balanced", max_iter=3000, random_state=seed)
    head.fit((features - center) / scale, targets)
    coef = head.coef_.T / scale[:, None]  # F x K
    return KindHead(classes, coef, head.intercept_ - center @ coef)


def recognised(head: KindHead, features: np.ndarray, kind: Modality) -> np.ndarray:
    """Whether each image is answered as `kind` (its probability at least the minimum)."""
    return head.probabilities(features)[:, head.classes.index(kind)] >= MINIMUM_PROBABILITY


def measure(head: KindHead, measured: Features) -> dict[str, dict[str, Any]]:
    """Per kind: how often its own images are recognised (plain and at 3:2), and how often each other kind's
    images, the photographs and the synthetic ones are refused as that kind."""
    kinds = measured.kinds
    figures: dict[str, dict[str, Any]] = {}
    for kind in head.classes:
        own = kinds == kind.value
        entry: dict[str, Any] = {
            "own_recognised": _share(recognised(head, measured.plain[own], kind)),
            "own_recognised_at_3_2": _share(recognised(head, measured.framed[own], kind)),
            "n_own": int(own.sum()),
        }
        if kind is not Modality.OTHER:
            refused = {}
            for other in head.classes:
                if other is kind:
                    continue
                rows = kinds == other.value
                refused[other.value] = _share(~recognised(head, measured.plain[rows], kind))
            synthetic = np.array([item.source.startswith("synthetic:") for item in measured.images])
            photographs = np.array([item.source.startswith("skimage:") for item in measured.images])
            refused["synthetic"] = _share(~recognised(head, measured.plain[synthetic], kind))
            refused["photographs"] = _share(~recognised(head, measured.plain[photographs], kind))
            entry["others_refused"] = refused
        figures[kind.value] = entry
    return figures


def _share(flags: np.ndarray) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def leave_one_collection_out(fit: Features, measured: Features, classes: list[Modality], seed: int) -> list[dict]:
    """For each fundus collection: the check fitted without its photographs, measured on its test images."""
    sites = sorted({item.site for item in fit.images if item.kind is Modality.FUNDUS_PHOTOGRAPH and item.site})
    rounds = []
    for site in sites:
        keep = np.array([not (item.kind is Modality.FUNDUS_PHOTOGRAPH and item.site == site) for item in fit.images])
        subset = Features([i for i, k in zip(fit.images, keep, strict=True) if k], fit.plain[keep], fit.framed[keep])
        head = fit_head(subset, classes, seed)
        rows = np.array([item.kind is Modality.FUNDUS_PHOTOGRAPH and item.site == site for item in measured.images])
        rounds.append(
            {
                "held_out": site,
                "n_images": int(rows.sum()),
                "recognised": _share(recognised(head, measured.plain[rows], Modality.FUNDUS_PHOTOGRAPH)),
                "recognised_at_3_2": _share(recognised(head, measured.framed[rows], Modality.FUNDUS_PHOTOGRAPH)),
            }
        )
    return rounds


def export(head: KindHead, extractor: FeatureExtractor, card: ModalityCard, models_dir: Path) -> Path:
    """`<models>/_modality/<version>/`: a SavedModel (image -> probabilities per kind) and its card."""
    model, network, dense = check_network(len(head.classes))
    for layer in network.layers:
        if layer.weights:
            layer.set_weights(extractor.network.get_layer(layer.name).get_weights())
    dense.set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    return publish_check(model, card, models_dir)


def check_network(kinds: int) -> tuple[keras.Model, keras.Model, keras.layers.Dense]:
    """[0, 1] RGB 224 px -> probabilities per kind: the input scaling, EfficientNet-Lite0, its pooled features and
    the kinds' softmax."""
    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    scaled = keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="to_lite_input")(inputs)
    network = efficientnet_lite0(include_top=False, input_tensor=scaled)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(network.output)
    dense = keras.layers.Dense(kinds, activation="softmax", name="kinds")
    return keras.Model(inputs, dense(pooled), name="modality"), network, dense


def publish_check(model: keras.Model, card: ModalityCard, models_dir: Path) -> Path:
    """Write a check (float32 N x 224 x 224 x 3 in [0, 1] -> N x kinds) as the next version, whole or not at all."""
    version = next_version(models_dir, MODALITY_DIR)
    folder = models_dir / MODALITY_DIR / str(version)
    staging = folder.with_name(f".{version}.partial")
    image_spec = [tf.TensorSpec((None, SIDE, SIDE, 3), tf.float32, name="image")]
    write_signatures(staging, [model], {SERVE: lambda image: model(image, training=False)}, image_spec)
    card = card.model_copy(update={"version": version})
    (staging / METADATA_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    staging.rename(folder)  # whole or not at all: the service never sees half a version
    return folder


def run(options: ModalityOptions) -> dict[str, Any]:
    started = time.perf_counter()
    medical = medical_images(options.data_dir, options.per_kind, options.measure_per_kind, options.seed)
    others = other_images(options.synthetic_fit, options.synthetic_measure, options.seed)
    present = {item.kind for item in medical.fit + others.fit}
    classes = [kind for kind in known_kinds() if kind in present]  # the kinds of the data sets in --data
    extractor = FeatureExtractor()
    fit = features_of(medical.fit + others.fit, extractor)
    measured = features_of(medical.measure + others.measure, extractor)
    head = fit_head(fit, classes, options.seed)
    figures = measure(head, measured)
    import skimage.data  # a real fundus photograph from another camera, 1411 px, never fitted on

    retina = extractor(kind_input(Image.fromarray(skimage.data.retina()))[np.newaxis])
    result: dict[str, Any] = {
        "classes": [c.value for c in classes],
        "minimum_probability": MINIMUM_PROBABILITY,
        "fit_images": {c.value: int((fit.kinds == c.value).sum()) for c in classes},
        "figures": figures,
        "fundus_collection_held_out": leave_one_collection_out(fit, measured, classes, options.seed),
        "skimage_retina_fundus_probability": (
            round(float(head.probabilities(retina)[0, classes.index(Modality.FUNDUS_PHOTOGRAPH)]), 4)
            if Modality.FUNDUS_PHOTOGRAPH in classes
            else None
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if options.export:
        card = ModalityCard(
            version=0,
            classes=classes,
            architecture=f"{ARCH} (ImageNet, frozen) + multinomial logistic regression",
            minimum_probability=MINIMUM_PROBABILITY,
            figures={
                kind: ModalityFigures(
                    n_images=int(entry["n_own"]),  # type: ignore[call-overload]
                    recognised=float(entry["own_recognised"] or 0.0),  # type: ignore[arg-type]
                    source="the test parts of the data sets in ../shared (default split), synthetic images and "
                    "scikit-image photographs never fitted on",
                )
                for kind, entry in figures.items()
            },
            training={key: value for key, value in result.items() if key != "figures"},
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        result["exported"] = str(export(head, extractor, card, options.models_dir))
    if options.report is not None:
        options.report.parent.mkdir(parents=True, exist_ok=True)
        options.report.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result

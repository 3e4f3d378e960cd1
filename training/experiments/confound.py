"""`python -m training confound <disease>`: how well a classifier that cannot see lesions separates the
classes, on the pixels the model is fed.

A logistic regression on nine global statistics (per-channel mean and standard deviation, share of dark
pixels, mean brightness of the outer frame and of the centre) of every image, measured by grouped,
stratified 5-fold cross-validation (out-of-fold ROC AUC). Near 0.5: the classes differ in nothing so
coarse. High: the data sets' sources, cameras or borders tell the classes apart, and a CNN's figure is
not evidence that it sees the disease. Retinopathy's raw images: about 0.80 (its card's caveat).

`python -m training record-confound <disease>` puts the check of the pixels a version is fed (its input size,
colour mode and preparation) into that version's card, beside its own figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from app.contract.model_card import ModelCard, SourceConfound, read_card, replace_card
from app.contract.model_store import METADATA_FILE
from app.contract.preprocessing import InputSpec
from training.data.config import samples_of
from training.data.pipeline import decode_samples, kept_samples, pixels_of
from training.data.samples import DataError, Sample
from training.data.versions import published_version
from training.release.train import TrainOptions

FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "dark_share", "frame_mean", "centre_mean")
DARK = 0.1  # of full scale: the black surround of a fundus photograph
FRAME = 0.1  # the outer tenth of each side


def global_statistics(pixels: np.ndarray) -> np.ndarray:
    """N x H x W x C uint8 -> N x 9 features a classifier blind to lesions could use."""
    images = pixels.astype(np.float32) / 255.0
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    luma = images.mean(axis=-1)
    height, width = luma.shape[1:]
    top, left = max(1, int(FRAME * height)), max(1, int(FRAME * width))
    frame = np.ones((height, width), bool)
    frame[top : height - top, left : width - left] = False
    centre = np.zeros((height, width), bool)
    centre[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    return np.column_stack(
        [
            images.mean(axis=(1, 2)),
            images.std(axis=(1, 2)),
            (luma < DARK).mean(axis=(1, 2)),
            luma[:, frame].mean(axis=1),
            luma[:, centre].mean(axis=1),
        ]
    )


def out_of_fold_auc(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 42
) -> dict[str, float]:
    """ROC AUC of a standardised logistic regression on held-out patient groups (positive: infected)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    infected = labels == 0
    scores = np.zeros(len(labels))
    per_fold = []
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, infected, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(features[train], infected[train])
        scores[held_out] = model.predict_proba(features[held_out])[:, 1]
        per_fold.append(roc_auc_score(infected[held_out], scores[held_out]))
    return {
        "roc_auc": float(roc_auc_score(infected, scores)),
        "fold_mean": float(np.mean(per_fold)),
        "fold_std": float(np.std(per_fold, ddof=1)),
    }


def confound_check(options: TrainOptions, report_dir: Path | None = None) -> dict[str, Any]:
    """Measure the blind classifier on every image of the disease, prepared as `options` prepares them."""
    spec: InputSpec = options.config.spec()
    samples: list[Sample] = samples_of(options.config, options.data_dir)
    decoded = decode_samples(samples, spec)
    samples = kept_samples(samples, decoded)
    result: dict[str, Any] = {
        "disease": options.disease,
        "input": list(spec.shape),
        "enhancement": spec.enhancement.value,
        "images": len(samples),
        "groups": len({s.group for s in samples}),
        "features": list(FEATURES),
        **out_of_fold_auc(
            global_statistics(pixels_of(decoded)),
            decoded.labels,
            np.array([s.group for s in samples]),
            seed=options.seed,
        ),
    }
    if report_dir is not None:
        path = report_dir / options.disease / "confound.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        earlier[entry_key(spec)] = result  # one entry per preparation
        path.write_text(json.dumps(earlier, indent=2) + "\n", encoding="utf-8")
    return result


def entry_key(spec: InputSpec) -> str:
    return f"{spec.enhancement.value}-{spec.height}px"


def record_confound_in_card(models_dir: Path, disease: str, report_dir: Path, version: int | None = None) -> ModelCard:
    """Copy the check of exactly the pixels the version is fed from <report_dir>/<disease>/confound.json into
    its card (answers unchanged; the card is replaced atomically)."""
    folder = published_version(models_dir, disease, version)
    card = read_card(folder / METADATA_FILE)
    spec = card.input.spec()
    path = report_dir / disease / "confound.json"
    entry = json.loads(path.read_text(encoding="utf-8")).get(entry_key(spec)) if path.is_file() else None
    if entry is None or entry["input"] != list(spec.shape):
        raise DataError(
            f"{path} has no check of the pixels version {card.version} is fed ({list(spec.shape)}, "
            f"{spec.enhancement.value}); run: python -m training confound {disease} --data DIR "
            f"--image-size {spec.height} --colour-mode {spec.colour_mode.value} --enhancement {spec.enhancement.value}"
        )
    measured = SourceConfound(
        **{key: entry[key] for key in SourceConfound.model_fields if key != "report"}, report=path.as_posix()
    )
    card = card.model_copy(update={"source_confound": measured})
    replace_card(card, folder / METADATA_FILE)
    return card

"""From a trained Keras model to a published version: fit the trust layer, export, measure, publish.

Shared by `train` (a new model) and `calibrate` (an existing version re-exported with the trust
layer), so every new version gets calibration, a screening threshold, out-of-distribution statistics
and Grad-CAM without extra steps. Measurements are taken on the exported SavedModel, loaded the way
the service loads it, after checking that it answers as the Keras model did.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.contract.model_card import (
    CLASS_NAMES,
    Calibration,
    ModelCard,
    OutOfDistribution,
    Screening,
    SplitCounts,
    views_under,
    write_card,
)
from app.contract.model_store import METADATA_FILE, REPORT_DIR
from app.contract.preprocessing import InputSpec
from app.contract.savedmodel import load_model
from app.contract.scoring import calibrated_probability
from training.data.config import DiseaseConfig, other_diseases
from training.data.pipeline import DecodedSet, kept_samples, pixels_of, prediction_batches
from training.data.samples import Sample, Split
from training.evaluation.answers import image_names
from training.evaluation.assessment import (
    PROBE_LIMIT,
    Assessment,
    Probe,
    assess,
    probe_sets,
    with_assessment,
    write_assessment_report,
)
from training.evaluation.generalisation import breakdowns
from training.evaluation.metrics import compute_metrics, probabilities_of
from training.networks.servable import (
    MemberwiseOod,
    Networks,
    distance_members,
    feature_widths,
    features_and_log_odds,
    members_of,
    ood_bits,
    round_kernels,
    write_savedmodel,
)
from training.release.export import stage_version
from training.release.trust import DEFAULT_TARGET_SENSITIVITY, OOD_QUANTILE, FittedTrust, fit_trust

log = logging.getLogger("training")
OOD_METHOD = (
    "Mahalanobis distance (Lee et al., 2018) to the nearest class mean, shared Ledoit-Wolf covariance, of "
    "the standardised features: spatial mean of every convolution's output, the head's input, and the input's "
    "16-bin intensity histogram, 16-bin histogram of neighbour differences and 4 x 4 grid of mean intensity"
)
OUTPUT_DESCRIPTION = (
    "serving_default: two independent sigmoid scores in `classes` order. The service reports "
    "P(infected) = sigmoid(log(s_infected / s_uninfected) / temperature + bias) (the `analyse` signature gives "
    "the log-odds from the logits; temperature 1 and bias 0 is each score divided by their sum) and labels "
    "`infected` from "
    "the screening threshold up (app/contract/scoring.py)"
)
MEMBERWISE_METHOD = (
    "; an ensemble's: each member's distance on its own features over that member's 97.5th-percentile "
    "distance of the validation part, the largest of them (flagged where any member finds the image unlike)"
)
UNREAD_MEMBERS_METHOD = (
    "; not on the lesion measures' features (fundus_lesions), which tell collections apart by how their "
    "photographs were saved"
)
PARITY_TOLERANCE = 1e-3  # log-odds: the SavedModel must answer as the Keras model did


@dataclass(frozen=True)
class ReleaseData:
    train: DecodedSet
    validation: DecodedSet
    test: DecodedSet
    validation_groups: list[str]
    test_groups: list[str]
    probes: dict[str, Probe]  # images the out-of-distribution check must flag
    test_samples: list[Sample] = field(default_factory=list)  # the readable test files, for per-site/grade figures
    data_dir: Path | None = None
    config: DiseaseConfig | None = None  # the disease's sites and grades, for the per-site/grade figures


def release_data(
    config: DiseaseConfig,
    split: Split,
    decoded: dict[str, DecodedSet],
    data_dir: Path,
    spec: InputSpec,
    probe_limit: int = PROBE_LIMIT,
) -> ReleaseData:
    """The decoded parts of a split, their patient groups, and the images the OOD check must refuse."""
    return ReleaseData(
        train=decoded["train"],
        validation=decoded["validation"],
        test=decoded["test"],
        validation_groups=[s.group for s in kept_samples(split.validation, decoded["validation"])],
        test_groups=[s.group for s in kept_samples(split.test, decoded["test"])],
        test_samples=kept_samples(split.test, decoded["test"]),
        data_dir=data_dir,
        config=config,
        probes=probe_sets(data_dir, config.name, spec, known=other_diseases(config), limit=probe_limit),
    )


def split_counts(split: Split, decoded: dict[str, DecodedSet]) -> SplitCounts:
    """Images of each class and patient groups in each part, as read (unreadable files skipped)."""

    def per_class(part: DecodedSet) -> dict[str, int]:
        counts = np.bincount(part.labels, minlength=len(CLASS_NAMES))
        return {name: int(counts[index]) for index, name in enumerate(CLASS_NAMES)}

    return SplitCounts(
        train=per_class(decoded["train"]),
        validation=per_class(decoded["validation"]),
        test=per_class(decoded["test"]),
        groups={part: len({s.group for s in samples}) for part, samples in split.parts().items()},
        unreadable_skipped=sum(len(item.unreadable) for item in decoded.values()),
    )


def ood_method(networks: Networks, trust: FittedTrust) -> str:
    """How the card says the distance is measured: over one network, each member's, and which members it skips."""
    members = members_of(networks)
    method = OOD_METHOD + (MEMBERWISE_METHOD if isinstance(trust.ood, MemberwiseOod) else "")
    return method + (UNREAD_MEMBERS_METHOD if len(distance_members(members)) < len(members) else "")


def with_trust(
    card: ModelCard, trust: FittedTrust, target_sensitivity: float, validation_images: int, ood_method: str
) -> ModelCard:
    fitted_on = f"validation part ({validation_images} images)"
    return card.model_copy(
        update={
            "calibration": Calibration(
                method="platt" if trust.calibration.method == "platt" else "temperature",
                temperature=trust.calibration.temperature,
                bias=trust.calibration.bias,
                fitted_on=fitted_on,
                selection=trust.calibration.selection,
            ),
            "screening": Screening(
                target_sensitivity=target_sensitivity, threshold=trust.threshold, validation=trust.validation_point
            ),
            "out_of_distribution": OutOfDistribution(
                method=ood_method,
                fitted_on="training part (Gaussian); validation part (threshold)",
                threshold=trust.ood_threshold,
                threshold_quantile=OOD_QUANTILE,
            ),
        }
    )


def _fitted_trust(
    networks: Networks,
    data: ReleaseData,
    flips: Sequence[str],
    batch_size: int,
    target_sensitivity: float,
    matrix_bits: int,
) -> tuple[FittedTrust, np.ndarray, np.ndarray]:
    """The trust layer fitted on the validation part as the export will answer it (with its flips): (the trust
    layer, the validation part's features, the test part's log-odds)."""
    views = views_under(flips)
    train_features, _ = features_and_log_odds(networks, prediction_batches(data.train, batch_size=batch_size))
    validation_features, validation_odds = features_and_log_odds(
        networks, prediction_batches(data.validation, batch_size=batch_size, views=views), flips
    )
    _, test_odds = features_and_log_odds(
        networks, prediction_batches(data.test, batch_size=batch_size, views=views), flips
    )
    trust = fit_trust(
        train_features,
        data.train.labels,
        validation_features,
        validation_odds,
        data.validation.labels,
        data.validation_groups,
        target_sensitivity=target_sensitivity,
        feature_widths=feature_widths(networks),
        ood_bits=matrix_bits,
    )
    return trust, validation_features, test_odds


def _with_breakdowns(
    card: ModelCard, data: ReleaseData, assessment: Assessment, trust: FittedTrust, validation_features: np.ndarray
) -> ModelCard:
    """The card with its figures per site and grade, where the release knows the data folder they come from."""
    if data.data_dir is None or data.config is None:
        return card
    return card.model_copy(
        update=breakdowns(
            card,
            data.config,
            data.data_dir,
            data.test_samples,
            assessment.labels,
            assessment.uncalibrated,
            assessment.calibrated,
            trust.ood.distances(validation_features),
        )
    )


def release(
    networks: Networks,
    spec: InputSpec,
    data: ReleaseData,
    card: ModelCard,
    models_dir: Path,
    *,
    history: dict[str, list[float]] | None = None,
    previous_report: Path | None = None,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    batch_size: int = 128,
) -> Path:
    """Fit, export, check, measure and publish one network or an ensemble's; returns the new version folder.
    The card's test-time flips are exported into the graph, and the temperature and thresholds are fitted on
    the answers with them; with the card's `kernel_bits` 16 or 8, the networks' kernels are first rounded in place
    to what the export stores."""
    flips = card.test_time_flips
    # before anything is fitted or measured: the figures are those of the export
    round_kernels(networks, card.kernel_bits)
    trust, validation_features, test_odds = _fitted_trust(
        networks, data, flips, batch_size, target_sensitivity, ood_bits(card.kernel_bits)
    )
    log.info(
        "%s: calibration %s (temperature %.3f, bias %.3f), screening threshold %.4f, ood threshold %.2f",
        card.disease,
        trust.calibration.method,
        trust.calibration.temperature,
        trust.calibration.bias,
        trust.threshold,
        trust.ood_threshold,
    )
    provisional = with_trust(
        card, trust, target_sensitivity, data.validation.size, ood_method(networks, trust)
    ).model_copy(
        update={"metrics": compute_metrics(data.test.labels, probabilities_of(calibrated_probability(test_odds)))}
    )

    with stage_version(models_dir, card.disease) as staged:
        write_savedmodel(networks, spec, trust.ood, staged.folder, flips, card.kernel_bits)
        if previous_report is not None and previous_report.is_dir():
            shutil.copytree(previous_report, staged.folder / REPORT_DIR)
        write_card(provisional, staged.folder / METADATA_FILE)  # load_model reads it
        served = load_model(staged.folder)
        assessment = assess(
            served,
            pixels_of(data.test),
            data.test.labels,
            data.test_groups,
            data.probes,
            image_names(data.test_samples, data.data_dir),
        )
        drift = float(np.max(np.abs(assessment.log_odds - test_odds), initial=0.0))
        if drift > PARITY_TOLERANCE:
            raise RuntimeError(f"the exported model answers differently from the trained one (log-odds {drift:.2e})")
        final = _with_breakdowns(with_assessment(provisional, assessment), data, assessment, trust, validation_features)
        write_assessment_report(staged.folder, final, assessment, history)
        return staged.publish(final)

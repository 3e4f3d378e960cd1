"""Test-set metrics, the classification report and the plots a person looks at."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import classification_report, roc_curve  # noqa: E402

from app.contract.model_card import CLASS_NAMES, OperatingPoint, TestMetrics  # noqa: E402
from app.contract.scoring import POSITIVE  # noqa: E402

INFECTED = 0  # index of the positive class in CLASS_NAMES
ECE_BINS = 15


def probabilities_of(positive: np.ndarray) -> np.ndarray:
    """N probabilities of `infected` -> N x 2 in CLASS_NAMES order."""
    return np.stack([positive, 1 - positive], axis=1)


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> TestMetrics:
    """labels: class indices; probabilities: N x 2 normalised, positive class 'infected'."""
    positive = labels == INFECTED
    predicted_positive = probabilities[:, INFECTED] >= threshold
    tp = int(np.sum(positive & predicted_positive))
    tn = int(np.sum(~positive & ~predicted_positive))
    fp = int(np.sum(~positive & predicted_positive))
    fn = int(np.sum(positive & ~predicted_positive))
    sensitivity = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    both_classes = 0 < positive.sum() < len(positive)
    return TestMetrics(
        n_images=len(labels),
        accuracy=_ratio(tp + tn, len(labels)),
        sensitivity=sensitivity,
        specificity=_ratio(tn, tn + fp),
        precision=precision,
        recall=sensitivity,
        f1=_ratio(2 * precision * sensitivity, precision + sensitivity),
        roc_auc=roc_auc(positive, probabilities[:, INFECTED]) if both_classes else None,
        confusion_matrix=[[tp, fn], [fp, tn]],  # rows true infected/uninfected, columns predicted
        threshold=threshold,
    )


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's roc_auc_score (ties count a half), as the Mann-Whitney U of average ranks: the bootstrap
    intervals compute it 3,000 times a run, and sklearn's input checks made that a third of a small run."""
    ranks = rankdata(scores)
    positives = int(np.sum(positive))
    negatives = len(positive) - positives
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


INTERVAL_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def resampled_metrics(
    positive: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """compute_metrics' INTERVAL_METRICS for R resamples of the same images at once: `weights` (R x N) says how
    often each resample holds each image. A resample without both classes has no ROC AUC (NaN)."""
    predicted = scores >= threshold
    tp, fn = weights @ (positive & predicted), weights @ (positive & ~predicted)
    fp, tn = weights @ (~positive & predicted), weights @ (~positive & ~predicted)
    sensitivity, precision = _ratios(tp, tp + fn), _ratios(tp, tp + fp)
    return {
        "accuracy": _ratios(tp + tn, tp + fn + fp + tn),
        "sensitivity": sensitivity,
        "specificity": _ratios(tn, tn + fp),
        "precision": precision,
        "f1": _ratios(2 * precision * sensitivity, precision + sensitivity),
        "roc_auc": weighted_roc_auc(positive, scores, weights),
    }


def weighted_roc_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """roc_auc of each row of image weights (R x N): the weighted share of (positive, negative) pairs the
    positive outscores, ties a half."""
    order = np.argsort(scores, kind="stable")
    ordered, is_positive, w = scores[order], positive[order], weights[:, order]
    negatives = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * ~is_positive, axis=1)], axis=1)
    _, first, tie_sizes = np.unique(ordered, return_index=True, return_counts=True)
    starts = np.repeat(first, tie_sizes)  # each image's tie group: where it starts and ends in `ordered`
    ends = starts + np.repeat(tie_sizes, tie_sizes)
    below, tied = negatives[:, starts], negatives[:, ends] - negatives[:, starts]
    pairs = (w * is_positive).sum(axis=1) * negatives[:, -1]
    won = ((w * is_positive) * (below + 0.5 * tied)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, won / np.where(pairs > 0, pairs, 1.0), np.nan)


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """_ratio for arrays: 0 where the denominator is."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator != 0)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def report_text(labels: np.ndarray, probabilities: np.ndarray) -> str:
    predicted = np.argmax(probabilities, axis=1)
    return classification_report(labels, predicted, labels=[0, 1], target_names=list(CLASS_NAMES), digits=4)


def write_report(
    folder: Path,
    *,
    disease: str,
    labels: np.ndarray,
    probabilities: np.ndarray,
    metrics: TestMetrics,
    history: dict[str, list[float]] | None,
    calibrated: np.ndarray | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """evaluation.json, classification_report.txt and PNG plots in `folder`. Without a training
    history, an existing report's (of the version this one re-exports or re-measures) is kept, and its
    learning_curves.png."""
    folder.mkdir(parents=True, exist_ok=True)
    kept_history = None
    if history is None and (folder / "evaluation.json").is_file():
        kept_history = json.loads((folder / "evaluation.json").read_text(encoding="utf-8")).get("history")
    text = report_text(labels, probabilities)
    (folder / "classification_report.txt").write_text(text, encoding="utf-8")
    (folder / "evaluation.json").write_text(
        json.dumps(
            {
                "disease": disease,
                "metrics": metrics.model_dump(),
                "classification_report": text,
                **(extra or {}),
                "history": history or kept_history,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    _plot_roc(folder / "roc_curve.png", disease, labels, probabilities, metrics.roc_auc)
    _plot_confusion(folder / "confusion_matrix.png", disease, metrics)
    if calibrated is not None:
        _plot_reliability(folder / "reliability_diagram.png", disease, labels, probabilities[:, INFECTED], calibrated)
    if history:
        _plot_history(folder / "learning_curves.png", disease, history)


def _plot_reliability(path: Path, disease: str, labels, uncalibrated, calibrated, bins: int = 15) -> None:
    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    for name, values, style in (("uncalibrated", uncalibrated, "o-"), ("calibrated", calibrated, "s-")):
        observed, predicted = calibration_curve(labels == INFECTED, values, n_bins=bins, strategy="uniform")
        axis.plot(predicted, observed, style, markersize=4, label=name)
    axis.set(
        xlabel="predicted P(infected)",
        ylabel="observed share infected",
        title=f"{disease}: reliability ({bins} bins, test)",
    )
    axis.legend(loc="upper left")
    _save(figure, path)


def _plot_roc(path: Path, disease: str, labels, probabilities, auc: float | None) -> None:
    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    if auc is not None:
        fpr, tpr, _ = roc_curve(labels == INFECTED, probabilities[:, INFECTED])
        axis.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title=f"{disease}: ROC on the test part",
    )
    axis.legend(loc="lower right")
    _save(figure, path)


def _plot_confusion(path: Path, disease: str, metrics: TestMetrics) -> None:
    matrix = np.array(metrics.confusion_matrix)
    figure, axis = plt.subplots(figsize=(4.5, 4), dpi=100)
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=14)
    axis.set_xticks([0, 1], [f"predicted\n{name}" for name in CLASS_NAMES])
    axis.set_yticks([0, 1], [f"true\n{name}" for name in CLASS_NAMES])
    axis.set_title(f"{disease}: confusion matrix (test, n={metrics.n_images})")
    _save(figure, path)


def _plot_history(path: Path, disease: str, history: dict[str, list[float]]) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                axis.plot(epochs, values, style, label=("validation " if prefix else "training ") + metric)
        axis.set(xlabel="epoch", title=f"{disease}: {metric}")
        axis.legend()
    _save(figure, path)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width bins (Guo et al., 2017): confidence of the answered class vs accuracy."""
    said_positive = probabilities >= 0.5
    confidence = np.where(said_positive, probabilities, 1 - probabilities)
    correct = said_positive == (labels == POSITIVE)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def calibrated_ece_floor(probabilities: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The mean ECE of a perfectly calibrated model answering `probabilities`: labels drawn from them. ECE is biased
    upward on few images; this is the part of a measured ECE that sampling alone gives."""
    rng = np.random.default_rng(seed)
    draws_of_labels = np.where(rng.random((draws, len(probabilities))) < probabilities, POSITIVE, 1 - POSITIVE)
    return float(np.mean([expected_calibration_error(probabilities, labels) for labels in draws_of_labels]))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((probabilities - (labels == POSITIVE)) ** 2))


def operating_point(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> OperatingPoint:
    positive = labels == POSITIVE
    said_positive = probabilities >= threshold
    sensitivity = float(np.mean(said_positive[positive])) if positive.any() else 0.0
    specificity = float(np.mean(~said_positive[~positive])) if (~positive).any() else 0.0
    return OperatingPoint(threshold=threshold, sensitivity=sensitivity, specificity=specificity)

"""`python -m training compare <disease> --archs ... --folds K`: the paper's comparison (its Table 2:
its CNN against ResNet50, Xception and DenseNet121; CNN+VGG16 for breast cancer) on our data.

Every architecture is trained and measured on the same grouped, stratified folds (training/experiments/crossval.py),
at one input size that every architecture accepts. Writes `reports/<disease>/`: compare.json, README.md
(the report, with the paper's figures beside ours), roc.png and metrics.png.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.contract.machine import describe_machine
from app.contract.preprocessing import InputSpec
from training.data.config import DISEASES, Recipe
from training.experiments.crossval import (
    METRICS,
    Pool,
    cross_validation_pool,
    evaluate_round,
    require_three_folds,
    summarise,
)
from training.networks.architectures import min_side
from training.release.train import TrainOptions, resolve_recipe, resolve_start

log = logging.getLogger("training")

# What the paper states (Eur. J. Mol. Clin. Med. 9(3), 2022); '-' where it gives no figure.
PAPER_TABLE_2 = {
    "the paper's architecture": 98.43,
    "xception": 98.40,
    "resnet50": 97.13,
    "CNN": 96.80,
    "densenet121": 94.26,
}


def _architecture(
    options: TrainOptions, spec: InputSpec, recipe: Recipe, pool: Pool, folds: int, start: str | None
) -> dict[str, Any]:
    """One architecture on every fold: its figures, size, speed and ROC curve."""
    started = time.perf_counter()
    rounds, labels, scores, parameters = [], [], [], 0
    for fold in range(folds):
        result, held_labels, held_scores, fitted = evaluate_round(options, spec, recipe, pool, fold, folds, start)
        rounds.append(result)
        labels.append(held_labels)
        scores.append(held_scores[:, 0])
        parameters = fitted.model.count_params()
    train_images = sum(r.n_train * max(r.epochs_run, 1) for r in rounds)
    return {
        "summary": summarise(rounds),
        "rounds": [asdict(replace(r, scores=None)) for r in rounds],
        "parameters": int(parameters),
        "train_ms_per_image_epoch": round(1000 * sum(r.seconds for r in rounds) / train_images, 3),
        "inference_ms_per_image": round(
            1000 * sum(r.predict_seconds for r in rounds) / sum(r.n_evaluated for r in rounds), 3
        ),
        "roc": roc_points(np.concatenate(labels), np.concatenate(scores)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def compare(
    options: TrainOptions,
    archs: list[str],
    folds: int = 3,
    subset: int | None = None,
    image_size: int | None = None,
    report_dir: Path = Path("reports"),
    per_group: int | None = None,
) -> dict[str, Any]:
    require_three_folds(folds)  # before any pretraining of a start
    config = options.config
    recipe = resolve_recipe(config, options)
    if options.weights is None:  # every architecture starts as --weights says (none: scratch), alike
        recipe = replace(recipe, pretrained_start=False)
    start = resolve_start(config, recipe, options)
    size = max(image_size or config.image_size, *(min_side(arch) for arch in archs))
    spec = config.spec(size)
    pool = cross_validation_pool(options, spec, folds, subset, per_group)
    results: dict[str, dict] = {}
    comparison = {
        "disease": options.disease,
        "folds": folds,
        "seed": options.seed,
        "input": list(spec.shape),
        "images": len(pool.samples),
        "groups": len({s.group for s in pool.samples}),
        "subset": subset,
        "per_group": per_group,
        "recipe": recipe.as_dict(),
        "weights": options.weights or "none",
        "architectures": results,
        "seconds": 0.0,
        "machine": describe_machine(),
    }
    earlier = _earlier_results(report_dir / options.disease / "compare.json", comparison)
    for arch in archs:
        if arch in earlier:  # same folds, data and recipe: measured by an earlier run, kept
            results[arch] = earlier[arch]
            continue
        results[arch] = _architecture(replace(options, arch=arch), spec, recipe, pool, folds, start)
        # every architecture's time, those measured by an earlier part of the run included
        comparison["seconds"] = round(sum(_arch_seconds(r) for r in results.values()), 1)
        write_report(comparison, report_dir / options.disease)  # after each architecture: a long run stays useful
    return comparison


def _arch_seconds(result: dict) -> float:
    """Wall-clock time of one architecture (older reports: its training and prediction time)."""
    seconds = result.get("seconds")
    if seconds is not None:
        return seconds
    return sum(r["seconds"] + r.get("predict_seconds", 0.0) for r in result["rounds"])


SAME_RUN = ("disease", "folds", "seed", "input", "images", "groups", "subset", "per_group", "recipe", "weights")


def _earlier_results(path: Path, comparison: dict) -> dict[str, dict]:
    """Architectures already measured in `path` under the very same settings (a run split in parts)."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if any(earlier.get(key) != json.loads(json.dumps(comparison[key])) for key in SAME_RUN):
        return {}
    return earlier.get("architectures", {})


def roc_points(labels: np.ndarray, infected_scores: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """The pooled out-of-fold ROC curve, thinned to at most `points` points."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels == 0, infected_scores)  # positive class: infected, index 0
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    return {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}


def write_report(comparison: dict, folder: Path) -> None:
    """compare.json, README.md, roc.png and metrics.png in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    archs = comparison["architectures"]

    figure, axes = plt.subplots(figsize=(5, 5))
    for arch, result in archs.items():
        auc = result["summary"].get("roc_auc", {}).get("mean", float("nan"))
        axes.plot(result["roc"]["fpr"], result["roc"]["tpr"], label=f"{arch} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axes.set(
        xlabel="1 - specificity",
        ylabel="sensitivity",
        title=f"{comparison['disease']}: out-of-fold ROC, {comparison['folds']} grouped folds",
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(folder / "roc.png", dpi=100)
    plt.close(figure)

    shown = ("accuracy", "sensitivity", "specificity")
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(archs), 1)
    for index, (arch, result) in enumerate(archs.items()):
        means = [100 * result["summary"].get(m, {}).get("mean", np.nan) for m in shown]
        errors = [100 * result["summary"].get(m, {}).get("std", 0) for m in shown]
        axes.bar(np.arange(len(shown)) + index * width, means, width, yerr=errors, capsize=3, label=arch)
    axes.set_xticks(np.arange(len(shown)) + width * (len(archs) - 1) / 2, shown)
    axes.set(ylabel="% (mean +- sd over folds)", ylim=(0, 100), title=f"{comparison['disease']}")
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    figure.savefig(folder / "metrics.png", dpi=100)
    plt.close(figure)

    (folder / "README.md").write_text(report_markdown(comparison), encoding="utf-8")


def _cell(summary: dict, metric: str) -> str:
    if metric not in summary:
        return "-"
    mean, std = summary[metric]["mean"], summary[metric]["std"]
    return f"{100 * mean:.2f} +- {100 * std:.2f}%" if metric != "roc_auc" else f"{mean:.3f} +- {std:.3f}"


def report_markdown(comparison: dict) -> str:
    disease, archs = comparison["disease"], comparison["architectures"]
    recipe = comparison["recipe"]
    height, width, channels = comparison["input"]
    lines = [
        f"# {disease}: the paper's comparison of architectures, on our data",
        "",
        f"{comparison['folds']}-fold grouped, stratified cross-validation on the non-test part "
        f"({comparison['images']} images of {comparison['groups']} patient/slide groups"
        + (f", at most {comparison['per_group']} of each group" if comparison.get("per_group") else "")
        + (f", a grouped subset of about {comparison['subset']}" if comparison.get("subset") else "")
        + f"); every architecture on the same folds; input {height}x{width}x{channels}; recipe "
        f"`{recipe['name']}`, {recipe['epochs']} epochs, batch {recipe['batch_size']}; weights "
        f"`{comparison['weights']}`. Round i trains on the other folds but one, picks its epoch on fold i+1 "
        f"and is measured on fold i. Machine: {comparison['machine']}; total {comparison['seconds'] / 60:.0f} min.",
        "",
        "| architecture | " + " | ".join(METRICS) + " | parameters | train ms / image / epoch | inference ms / image |",
        "|---|" + "---|" * (len(METRICS) + 3),
    ]
    for arch, result in archs.items():
        lines.append(
            f"| {arch} | "
            + " | ".join(_cell(result["summary"], m) for m in METRICS)
            + f" | {result['parameters']:,} | {result['train_ms_per_image_epoch']:.2f}"
            f" | {result['inference_ms_per_image']:.3f} |"
        )
    test, text = DISEASES[disease].paper if disease in DISEASES else ("-", "-")
    lines += [
        "",
        "![ROC curves](roc.png) ![accuracy, sensitivity, specificity](metrics.png)",
        "",
        "## Beside the paper",
        "",
        f"Paper, Table 1 ({disease}): test accuracy {test}; best figure in its text {text}.",
        "Paper, Table 2 (accuracy; data set not separated): "
        + ", ".join(f"{name} {value:.2f}%" for name, value in PAPER_TABLE_2.items())
        + ".",
        "",
        "What differs: the paper splits by file (images of one patient can be on both sides, which flatters "
        "every figure) and reports one split; here no patient is on two sides and every figure is a mean over "
        "folds with its spread. The paper's baselines start from ImageNet weights on a GPU; here they train "
        f"from `{comparison['weights']}` weights on CPU cores within a fixed budget, so they are under-trained "
        "against the paper's and the comparison says how the architectures rank at this budget, not at "
        "convergence. Input sizes differ from the paper's 224 px for the baselines.",
        "",
    ]
    return "\n".join(lines)

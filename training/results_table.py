"""The README's results table, from the shipped model cards: `python -m training.results_table models/`."""

from __future__ import annotations

import sys
from pathlib import Path

from app.model_card import read_card
from app.model_store import METADATA_FILE, disease_names, latest_version, version_dir

# What each model should reach on its group-split test part; malaria's is the paper's own test accuracy
# (Eur. J. Mol. Clin. Med. 9(3), 2022), retinopathy's the same figure.
TARGETS = {"malaria": "accuracy >= 95.6% (paper)", "pneumonia": "accuracy >= 95%", "brain_tumor": "accuracy >= 97%",
           "breast_cancer": "AUC >= 0.90", "retinopathy": "accuracy >= 95.6%"}


def table(models_dir: Path) -> str:
    lines = [
        "| disease | version | input | images train / val / test | accuracy | sensitivity | specificity | F1 | ROC AUC "
        "| training time | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for disease in disease_names(models_dir):
        version = latest_version(models_dir, disease)
        if version is None:
            continue
        card = read_card(version_dir(models_dir, disease, version) / METADATA_FILE)
        m, counts = card.metrics, card.data.counts
        sizes = " / ".join(str(sum(part.values())) for part in (counts.train, counts.validation, counts.test))
        auc = f"{m.roc_auc:.3f}" if m.roc_auc is not None else "-"
        lines.append(
            f"| {disease} | {version} | {card.input.height}x{card.input.width}x{card.input.channels} | {sizes} "
            f"| {m.accuracy:.2%} | {m.sensitivity:.2%} | {m.specificity:.2%} | {m.f1:.3f} | {auc} "
            f"| {card.training.seconds / 60:.1f} min ({card.training.epochs_run} epochs) "
            f"| {TARGETS.get(disease, '-')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "models")))

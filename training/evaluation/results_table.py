"""The README's results tables, from the shipped model cards: `python -m training results-table models/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.contract.model_card import Calibration, ModelCard, read_card
from app.contract.model_store import METADATA_FILE, disease_names, latest_version, version_dir
from training.data.config import DISEASES


def shipped_cards(models_dir: Path) -> list[ModelCard]:
    cards = []
    for disease in disease_names(models_dir):
        version = latest_version(models_dir, disease)
        if version is not None:
            cards.append(read_card(version_dir(models_dir, disease, version) / METADATA_FILE))
    return cards


def glance_table(models_dir: Path) -> str:
    """The README's one table: each shipped model, its figure on patients it has not seen, and at sites it has
    not seen where its data set has several."""
    lines = _header(
        "disease",
        "modality",
        "version",
        "unseen patients: ROC AUC, accuracy as served",
        "a site held out: ROC AUC",
        "card",
    )
    for card in shipped_cards(models_dir):
        accuracy = _served_accuracy(card)
        patients = f"{card.metrics.roc_auc:.3f}, {accuracy}" if card.metrics.roc_auc is not None else accuracy
        sites = "one site only"
        if card.generalisation:
            held = [
                f"{s.site}: {s.held_out['roc_auc']:.3f}"
                for s in card.generalisation.sites
                if s.held_out and isinstance(s.held_out.get("roc_auc"), float)
            ]
            sites = "; ".join(held) or "not measured"
        kind = card.modality.short if card.modality else "-"
        lines.append(
            f"| {card.disease} | {kind} | {card.version} | {patients} | {sites} "
            f"| [metadata.json](models/{card.disease}/{card.version}/metadata.json) |"
        )
    return "\n".join(lines)


def _served_accuracy(card: ModelCard) -> str:
    """Accuracy at the screening threshold on the test part (what the service answers with)."""
    screening = card.screening
    if screening is None or screening.test is None:
        return f"{card.metrics.accuracy:.1%} at 0.5"
    counts = card.data.counts.test
    infected, uninfected = counts.get("infected", 0), counts.get("uninfected", 0)
    correct = screening.test.sensitivity * infected + screening.test.specificity * uninfected
    return f"{correct / max(infected + uninfected, 1):.1%}"


def _header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _interval(card: ModelCard, name: str, value: float) -> str:
    bounds = (card.metrics.intervals or {}).get(name)
    return f"{value:.2%} ({bounds[0]:.1%}-{bounds[1]:.1%})" if bounds else f"{value:.2%}"


def table(models_dir: Path) -> str:
    lines = _header(
        "disease",
        "version",
        "input",
        "images train / val / test",
        "accuracy (95% CI)",
        "sensitivity",
        "specificity",
        "F1",
        "ROC AUC",
        "training time",
        "target",
    )
    for card in shipped_cards(models_dir):
        m, counts = card.metrics, card.data.counts
        sizes = " / ".join(str(sum(part.values())) for part in (counts.train, counts.validation, counts.test))
        auc = f"{m.roc_auc:.3f}" if m.roc_auc is not None else "-"
        lines.append(
            f"| {card.disease} | {card.version} | {card.input.height}x{card.input.width}x{card.input.channels} "
            f"| {sizes} | {_interval(card, 'accuracy', m.accuracy)} | {m.sensitivity:.2%} | {m.specificity:.2%} "
            f"| {m.f1:.3f} | {auc} | {_training_time(card)} "
            f"| {DISEASES[card.disease].target if card.disease in DISEASES else '-'} |"
        )
    return "\n".join(lines)


def _training_time(card: ModelCard) -> str:
    spent = f"{card.training.seconds / 60:.1f} min"
    if card.ensemble_of:
        return f"{spent} ({len(card.ensemble_of)} networks, {card.training.epochs_run} epochs in all)"
    return f"{spent} ({card.training.epochs_run} epochs)"


def _calibration(calibration: Calibration) -> str:
    if calibration.method == "platt":
        return f"Platt: T {calibration.temperature:.3f}, bias {calibration.bias:+.3f}"
    return "none" if calibration.temperature == 1.0 else f"T {calibration.temperature:.3f}"


def trust_table(models_dir: Path) -> str:
    lines = _header(
        "disease",
        "calibration",
        "ECE before -> after (test)",
        "ECE, grouped CV: all rounds; per round (floor: a perfectly calibrated model's)",
        "Brier before -> after",
        "screening threshold",
        "sens / spec at it (test)",
        "sens / spec at 0.5",
        "flagged OOD: own test",
        "other diseases (lowest)",
        "photographs",
        "noise, blank",
    )
    for card in shipped_cards(models_dir):
        cal, screen, ood = card.calibration, card.screening, card.out_of_distribution
        if not (cal and cal.test and screen and screen.test and screen.test_at_0_5 and ood):
            lines.append(f"| {card.disease} | (exported before the trust layer) ||||||||||")
            continue
        flagged = ood.flagged
        others = {
            name: rate for name, rate in flagged.items() if name.endswith("test part") and name != "own test part"
        }
        lowest = min(others.items(), key=lambda item: item[1].flagged) if others else None
        lowest_text = f"{lowest[1].flagged:.1%} ({lowest[0].removesuffix(' test part')})" if lowest else "-"
        lines.append(
            f"| {card.disease} | {_calibration(cal)} | {cal.test.ece_before:.4f} -> {cal.test.ece_after:.4f}"
            f"{f' (floor {cal.test.ece_floor:.4f})' if cal.test.ece_floor is not None else ''} "
            f"| {_crossval_ece(card)} | {cal.test.brier_before:.4f} -> {cal.test.brier_after:.4f} "
            f"| {screen.threshold:.4f} "
            f"| {_point(screen.test)} "
            f"| {screen.test_at_0_5.sensitivity:.1%} / {screen.test_at_0_5.specificity:.1%} "
            f"| {flagged['own test part'].flagged:.1%} "
            f"| {lowest_text} "
            f"| {_flag(flagged, 'natural photographs (skimage.data)')} | {_flag(flagged, 'noise and blank images')} |"
        )
    return "\n".join(lines)


def _crossval_ece(card: ModelCard) -> str:
    """The ECE of the version's calibration fitted and measured round by round under grouped CV."""
    measured = card.cross_validation.calibration if card.cross_validation else None
    if measured is None:
        return "-"
    return (
        f"{measured.pooled_ece:.4f} (floor {measured.pooled_floor:.4f}); "
        f"{measured.ece['mean']:.4f} +- {measured.ece['std']:.4f} (floor {measured.floor:.4f})"
    )


def _point(point) -> str:
    """sensitivity / specificity, with their group-bootstrap intervals where the card has them."""

    def one(name: str) -> str:
        bounds = (point.intervals or {}).get(name)
        value = getattr(point, name)
        return f"{value:.1%} ({bounds[0]:.1%}-{bounds[1]:.1%})" if bounds else f"{value:.1%}"

    return f"{one('sensitivity')} / {one('specificity')}"


def crossval_table(models_dir: Path) -> str:
    """Each shipped model's recipe on patients it has not seen (grouped k-fold), beside its test part and the paper:
    accuracy, sensitivity and specificity at the screening threshold the service answers with (chosen on each
    round's validation fold) where the report measured it, and accuracy at 0.5."""
    lines = _header(
        "disease",
        "version",
        "grouped CV: accuracy as served",
        "sensitivity",
        "specificity",
        "accuracy at 0.5",
        "ROC AUC",
        "images / groups, folds",
        "recipe differs in",
        "test part: accuracy (95% CI)",
        "goal (CV)",
        "disease-blind baseline: ROC AUC",
        "paper: Table 1 test / text",
    )
    for card in shipped_cards(models_dir):
        config = DISEASES.get(card.disease)
        paper = " / ".join(config.paper) if config else "-"
        test = _interval(card, "accuracy", card.metrics.accuracy)
        cv = card.cross_validation
        if cv is None:
            lines.append(
                f"| {card.disease} | {card.version} | not cross-validated |{' - |' * 6} {test} "
                f"| {config.goal if config else '-'} | {_confound(card)} | {paper} |"
            )
            continue
        served = cv.screening.summary if cv.screening else {}
        lines.append(
            f"| {card.disease} | {card.version} | {_spread(served, 'accuracy')} "
            f"| {_spread(served, 'sensitivity')} | {_spread(served, 'specificity')} "
            f"| {_spread(cv.summary, 'accuracy')} "
            f"| {_spread(cv.summary, 'roc_auc', percent=False)} | {cv.images:,} / {cv.groups:,}, {cv.folds} "
            f"| {'; '.join(cv.differences) or '-'} | {test} | {config.goal if config else '-'} | {_confound(card)} "
            f"| {paper} |"
        )
    return "\n".join(lines)


def sites_table(models_dir: Path) -> str:
    """Per site: the test part's unseen patients of a site the model trained at, beside the site held out of
    training altogether (python -m training cross-site): the figure that says how it does at a new hospital."""
    lines = _header(
        "disease",
        "version",
        "site",
        "images",
        "unseen patients: AUC",
        "site held out: AUC (95% CI)",
        "held out: sens / spec at the screening threshold",
        "held out: ECE (told the site's prevalence, ?prevalence=)",
        "held out: flagged as another site / out of distribution",
    )
    for card in shipped_cards(models_dir):
        if card.generalisation is None:
            continue
        for site in card.generalisation.sites:
            within: dict[str, Any] = site.within or {}
            out: dict[str, Any] | None = site.held_out
            auc = _number(within.get("roc_auc"))
            if out is None:
                lines.append(
                    f"| {card.disease} | {card.version} | {site.site} | {site.n_images} | {auc} "
                    "| not measured | - | - | - |"
                )
                continue
            bounds = (out.get("intervals") or {}).get("roc_auc")
            held_auc = _number(out.get("roc_auc")) + (f" ({bounds[0]:.3f}-{bounds[1]:.3f})" if bounds else "")
            lines.append(
                f"| {card.disease} | {card.version} | {site.site} | {site.n_images} | {auc} | {held_auc} "
                f"| {_held_out_trust(out)} |"
            )
    return "\n".join(lines)


def _held_out_trust(out: dict[str, Any]) -> str:
    """The screening, ECE and flag columns; `-` where not measured (an ensemble's held-out figures are its
    members' mean answer: AUC and figures at 0.5 only)."""
    if "screening" not in out:
        return "not measured | - | -"
    screening, shift = out["screening"], out["site_shift"]
    told = (out.get("prior_shift") or {}).get("ece_at_site_prevalence")
    ece = f"{out['ece']['after']:.3f}" + (f" ({told:.3f})" if told is not None else "")
    return (
        f"{screening['sensitivity']:.1%} / {screening['specificity']:.1%} | {ece} "
        f"| {shift['flagged']:.1%} / {out['out_of_distribution']:.1%}"
    )


def _number(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def _confound(card: ModelCard) -> str:
    """A linear model on global colour and border statistics (training/experiments/confound.py): how far the classes
    differ in source or camera rather than disease; '-' where not measured."""
    measured = card.source_confound
    return f"{measured.fold_mean:.3f} +- {measured.fold_std:.3f}" if measured else "-"


def _spread(summary: dict[str, dict[str, float]], name: str, percent: bool = True) -> str:
    figure = summary.get(name)
    if figure is None:
        return "-"
    if percent:
        return f"{figure['mean']:.2%} +- {figure['std']:.2%}"
    return f"{figure['mean']:.3f} +- {figure['std']:.3f}"


def _flag(flagged: dict, name: str) -> str:
    rate = flagged.get(name)
    return f"{rate.flagged:.1%} of {rate.n_images}" if rate else "-"


MODELS_PAGE = Path("docs/models.md")
README = Path("README.md")


def generated_blocks(models_dir: Path) -> dict[str, str]:
    """What each marked block of the README and docs/models.md holds, made from the cards."""
    return {
        "glance": glance_table(models_dir),
        "tables": "\n\n".join([
            "### On the test part (patients never seen, from the sites trained at)", table(models_dir),
            "### At each site: unseen patients, and the whole site held out of training", sites_table(models_dir),
            "### Grouped cross-validation of each recipe", crossval_table(models_dir),
            "### The trust layer on the test part", trust_table(models_dir),
        ]),
    }  # fmt: skip


def write_generated(models_dir: Path, files: tuple[Path, ...] = (README, MODELS_PAGE)) -> list[Path]:
    """Replace every `<!-- generated: NAME -->` ... `<!-- end generated -->` block in `files`; returns those
    changed. A file without markers is left alone."""
    blocks = generated_blocks(models_dir)
    changed = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        updated = text
        for name, content in blocks.items():
            start, end = f"<!-- generated: {name} -->", "<!-- end generated -->"
            if start in updated:
                head, rest = updated.split(start, 1)
                _, tail = rest.split(end, 1)
                updated = f"{head}{start}\n{content}\n{end}{tail}"
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed

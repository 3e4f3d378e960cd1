"""Several published versions of a disease as one, answering the mean of their P(infected).

- `python -m training ensemble <disease> --members 4 5`: the members' networks are rebuilt from their
  SavedModels (each checked to answer as exported) and published as one new version. Its SavedModel runs
  them all: P(infected) is the members' mean (and, with test-time flips, that of their views), Grad-CAM the
  mean of their maps, and the out-of-distribution check sees every member's features. It gets its own
  temperature, screening threshold and out-of-distribution statistics on the split's validation part, and
  is measured on the test part as served, like any version; its card lists the members (`ensemble_of`),
  and it needs none of their folders afterwards. A member version may itself be an ensemble: its networks join
  the new one each with its own vote (so v9's two networks and a third version answer as the three recipes'
  cross-validated ensemble did), rebuilt from its SavedModel and checked together to answer as it does.
- `python -m training ensemble-crossval <report> <report> ...`: what the same ensemble scores under
  cross-validation, with no training: the reports' kept P(infected) of the same rounds, averaged. Each round
  then measures the ensemble of the recipes' models fitted on that round's training folds; its screening
  threshold is chosen on the averaged validation fold, as an export chooses it.

Members must come from the same split, so that no member has trained on a patient of the test part the
ensemble is measured on, and read the same kind of input (colour mode, enhancement, aspect ratio); their sizes
may differ: the ensemble takes the largest, and a smaller member sees the image resized to its own size in the
graph. `ensemble-crossval` combines recipes of any inputs (each member over its own flips); its report lists
each member's input.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from app.contract.model_card import EnsembleMember, InputCard, ModelCard, TrainingCard, read_card
from app.contract.model_store import METADATA_FILE
from app.contract.savedmodel import LoadedModel
from training.data.config import describe_disease, samples_of
from training.data.pipeline import decode_split
from training.data.samples import DataError, card_split_spec, split_as
from training.data.versions import published_version
from training.evaluation.assessment import PROBE_LIMIT
from training.experiments.crossval import measured_with, write_report
from training.release.calibrate import rebuilt_version
from training.release.publish import OUTPUT_DESCRIPTION, release, release_data, split_counts
from training.release.trust import DEFAULT_TARGET_SENSITIVITY, target_sensitivity_of

COMBINATION = "mean P(infected) over the members"
SCORE_KEYS = (
    "infected",
    "infected_with_flips",
)  # what a round keeps per image, see training.experiments.crossval._kept


def ensemble_architecture(architectures: list[str]) -> str:
    """`ensemble of 2 paper_cnn`, or `ensemble of paper_cnn + mobilenetv2`: the card's and the report's name."""
    if len(set(architectures)) == 1:
        return f"ensemble of {len(architectures)} {architectures[0]}"
    return "ensemble of " + " + ".join(architectures)


def member_of(card: ModelCard) -> EnsembleMember:
    return EnsembleMember(
        version=card.version,
        architecture=card.training.architecture,
        recipe=card.training.recipe,
        initial_weights=str(card.training.settings.get("initial_weights", "none")),
        best_epoch=card.training.best_epoch,
        seconds=card.training.seconds,
        input=list(card.input.spec().shape),
    )


def ensemble_input(cards: list[ModelCard]) -> InputCard:
    """The largest member's input: the others are resized down to theirs in the graph, never up."""
    largest = largest_input([list(card.input.spec().shape) for card in cards])
    return next(card.input for card in cards if list(card.input.spec().shape) == largest)


def check_members(cards: list[ModelCard]) -> None:
    """Two or more, the same kind of input, the same split: otherwise a member may have trained on the
    ensemble's test part."""
    if len(cards) < 2:
        raise DataError("an ensemble needs at least two member versions")
    if len({card.version for card in cards}) < len(cards):
        raise DataError("a version is listed twice among the members")
    first = cards[0]
    for card in cards[1:]:
        if not same_kind_of_input(card.input, first.input):
            raise DataError(
                f"version {card.version} takes {card.input.spec().shape} {card.input.enhancement}, "
                f"version {first.version} {first.input.spec().shape} {first.input.enhancement}: "
                f"members must take the same colour mode, enhancement and aspect ratio (sizes may differ)"
            )
        if card_split_spec(card) != card_split_spec(first):
            raise DataError(
                f"versions {first.version} and {card.version} were trained on different splits, so "
                f"one may have trained on the other's test part: members must share their split"
            )


def same_kind_of_input(one: InputCard, other: InputCard) -> bool:
    """Resizable into each other: same colour mode and enhancement, same aspect ratio."""
    return (
        one.colour_mode == other.colour_mode
        and one.enhancement == other.enhancement
        and one.height * other.width == other.height * one.width
    )


def ensemble_card(
    cards: list[ModelCard], flips: list[str], kernel_bits: int = 32, members: list[EnsembleMember] | None = None
) -> ModelCard:
    """The first member's card (data, caveats), the largest member's input, the ensemble's training, and no
    figures of its own yet. `members`: the networks, where a member version is itself an ensemble (default: one
    per card)."""
    first = cards[0]
    members = members if members is not None else [member_of(card) for card in cards]
    training = TrainingCard(
        recipe="ensemble",
        architecture=ensemble_architecture([m.architecture for m in members]),
        settings={"combination": COMBINATION, "member_versions": [m.version for m in members]},
        seed=first.training.seed,
        epochs_run=sum(card.training.epochs_run for card in cards),
        best_epoch=0,
        seconds=round(sum(m.seconds for m in members), 1),
        machine=first.training.machine,
    )
    return first.model_copy(
        update={
            "format_version": 2,
            "derived_from": None,
            "ensemble_of": members,
            "output": OUTPUT_DESCRIPTION,
            "training": training,
            "input": ensemble_input(cards),
            "test_time_flips": flips,
            "kernel_bits": kernel_bits,
            "cross_validation": None,
            "data": first.data.model_copy(update={"split_spec": card_split_spec(first)}),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def ensemble_versions(
    disease: str,
    members: list[int],
    *,
    data_dir: Path,
    models_dir: Path,
    target_sensitivity: float | None = None,
    test_time_flips: list[str] | None = None,
    kernel_bits: int | None = None,
    probe_limit: int = PROBE_LIMIT,
) -> Path:
    """Publish the members as one new version. None keeps the first member's target sensitivity, the flips
    the members all answer with (none where they differ), and kernels at 32 bits."""
    folders = [published_version(models_dir, disease, version) for version in members]
    check_members([read_card(folder / METADATA_FILE) for folder in folders])  # before any network is rebuilt
    rebuilt = [rebuilt_networks(folder) for folder in folders]
    networks: list[keras.Model] = [network for member_networks, _, _ in rebuilt for network in member_networks]
    cards = [exported.card for _, exported, _ in rebuilt]
    networks_of = [member for _, _, card_members in rebuilt for member in card_members]
    check_networks(networks_of)
    if test_time_flips is None:
        test_time_flips = (
            list(cards[0].test_time_flips)
            if all(card.test_time_flips == cards[0].test_time_flips for card in cards)
            else []
        )
    card = ensemble_card(cards, test_time_flips, kernel_bits or 32, networks_of)
    spec = card.input.spec()
    config = describe_disease(disease, data_dir)
    split = split_as(samples_of(config, data_dir), card_split_spec(card))
    decoded = decode_split(split, spec)
    card = card.model_copy(update={"data": card.data.model_copy(update={"counts": split_counts(split, decoded)})})
    data = release_data(config, split, decoded, data_dir, spec, probe_limit)
    return release(
        networks, spec, data, card, models_dir, target_sensitivity=target_sensitivity or target_sensitivity_of(cards[0])
    )


def rebuilt_networks(folder: Path) -> tuple[list[keras.Model], LoadedModel, list[EnsembleMember]]:
    """A member version's networks and how its card names them: its one network, or every network of an
    ensemble version (which then joins the new ensemble as its networks, not as one vote)."""
    networks, exported = rebuilt_version(folder)
    card = exported.card
    return networks, exported, list(card.ensemble_of) if card.ensemble_of else [member_of(card)]


def check_networks(members: list[EnsembleMember]) -> None:
    """No network twice: an ensemble version and one of its own members would give that network two votes."""
    versions = [member.version for member in members]
    repeated = sorted({version for version in versions if versions.count(version) > 1})
    if repeated:
        raise DataError(f"network of version {', '.join(map(str, repeated))} is among the members more than once")


def report_and_scores(report: Path) -> tuple[dict, Any]:
    """A cross-validation or cross-site report and the answers it kept beside it (`scores_file`)."""
    result = json.loads(report.read_text(encoding="utf-8"))
    if "scores_file" not in result:
        raise DataError(f"{report} kept no scores; run it again to keep them")
    return result, json.loads((report.parent / result["scores_file"]).read_text(encoding="utf-8"))


MAX_TAG = 200  # characters: with ".scores.json", within the 255 bytes a file name may have


def ensemble_tag(disease: str, names: list[str]) -> str:
    """`<disease>-ensemble-<member>+<member>...`, the members' report names without the disease; shortened to
    MAX_TAG with a digest of the whole where it is longer (three fundus recipes' names made 265 characters; the
    report lists every member in full)."""
    tag = f"{disease}-ensemble-" + "+".join(name.removeprefix(f"{disease}-") for name in names)
    if len(tag) <= MAX_TAG:
        return tag
    return f"{tag[: MAX_TAG - 11]}-{hashlib.sha256(tag.encode()).hexdigest()[:10]}"


def largest_input(shapes: list[list[int]]) -> list[int]:
    """The input an ensemble of members reading `shapes` takes: the largest (the others resized down to theirs)."""
    return max(shapes, key=lambda shape: shape[0] * shape[1])


def averaged_rounds(kept: list[list[dict]], names: list[str]) -> list[dict]:
    """Round by round, the members' kept P(infected) averaged; the rounds must hold the same images."""
    if len({len(rounds) for rounds in kept}) > 1:
        raise DataError("the reports have different numbers of rounds: " + ", ".join(names))
    averaged = []
    for index, members in enumerate(zip(*kept)):
        round_ = {}
        for part in ("held_out", "validation"):
            labels = members[0][part]["labels"]
            if any(member[part]["labels"] != labels for member in members):
                raise DataError(
                    f"round {index}'s {part} fold differs between the reports ({', '.join(names)}): "
                    f"cross-validate every member with the same folds and seed"
                )
            round_[part] = {"labels": labels}
            for key in SCORE_KEYS:
                if all(key in member[part] for member in members):
                    mean = np.mean([member[part][key] for member in members], axis=0)
                    round_[part][key] = np.round(mean, 5).tolist()
        averaged.append(round_)
    return averaged


def _member_inputs(results: list[dict]) -> dict:
    """The members' input and enhancement: one, or where they differ each member's (`ensemble` exports such
    members at the largest input, the others resized in the graph)."""
    inputs = [result["input"] for result in results]
    enhancements = [result.get("enhancement", "none") for result in results]
    if all(value == inputs[0] for value in inputs) and all(value == enhancements[0] for value in enhancements):
        return {"input": inputs[0], "enhancement": enhancements[0]}
    return {"input": inputs, "enhancement": enhancements}


def combine_crossvalidations(reports: list[Path], report_dir: Path) -> tuple[dict, Path]:
    """The cross-validation report of the ensemble of the reports' recipes, written beside them."""
    if len(reports) < 2:
        raise DataError("an ensemble's cross-validation needs the reports of at least two recipes")
    read = [report_and_scores(report) for report in reports]
    results = [result for result, _ in read]
    first = results[0]
    for key in ("disease", "folds", "seed", "images", "groups"):
        values = [result.get(key) for result in results]
        if any(value != values[0] for value in values):
            raise DataError(f"the reports differ in {key} ({values}): members must be cross-validated alike")
    flips = [result.get("with_flips", {}).get("flips") for result in results]
    rounds = [
        {"fold": fold, "scores": scores}
        for fold, scores in enumerate(averaged_rounds([kept for _, kept in read], [r.name for r in reports]))
    ]
    measured = measured_with(rounds, "infected", DEFAULT_TARGET_SENSITIVITY)
    names = [report.name.removesuffix(".json") for report in reports]
    result = {
        "disease": first["disease"],
        "folds": first["folds"],
        "seed": first["seed"],
        "arch": ensemble_architecture([r.get("arch", "paper_cnn") for r in results]),
        **_member_inputs(results),
        "recipe": {"combination": COMBINATION, "member_reports": names},
        "images": first["images"],
        "groups": first["groups"],
        "summary": measured["at_0_5"],
        "screening": {"target_sensitivity": DEFAULT_TARGET_SENSITIVITY, "summary": measured["at_screening"]},
        "rounds": rounds,
        "seconds": round(sum(r["seconds"] for r in results), 1),
    }
    if all(flips):  # each member as it answers, over its own flips
        union = sorted({flip for member in flips for flip in member})
        result["with_flips"] = {"flips": union, **measured_with(rounds, "infected_with_flips")}
        if any(member != flips[0] for member in flips):
            result["with_flips"]["member_flips"] = flips
    tag = ensemble_tag(first["disease"], names)
    write_report(result, report_dir, tag)
    return result, report_dir / f"{tag}.json"

"""`python -m training calibrate <disease>`: give an existing version the trust layer as a new version.

The weights are put back into a freshly built Keras model of the same architecture, re-exported with
the `analyse` and `explain` signatures, and the temperature, screening threshold and
out-of-distribution statistics are fitted on the card's own split. `serving_default` answers exactly
as before (release() checks it); only the version number moves up. With `test_time_flips`, the new
version answers for the image and those flips of it together (the weights stay the same).

An ensemble version is re-exported from its rebuilt networks the same way: the graph the code builds today (a
faster one of the same arithmetic, say) with the weights it was published with.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.contract.model_card import read_card
from app.contract.model_store import METADATA_FILE, REPORT_DIR
from app.contract.savedmodel import LoadedModel, load_model
from training.data.config import describe_disease, samples_of
from training.data.pipeline import decode_split
from training.data.samples import DataError, card_split_spec, split_as
from training.data.versions import published_version
from training.evaluation.assessment import PROBE_LIMIT
from training.networks.architectures import make_architecture
from training.networks.servable import (
    Networks,
    features_and_log_odds,
    rebuild_ensemble_networks,
    rebuild_keras_model,
)
from training.release.publish import OUTPUT_DESCRIPTION, release, release_data
from training.release.trust import target_sensitivity_of

log = logging.getLogger("training")
REBUILD_TOLERANCE = 1e-4  # log-odds of the rebuilt model against the exported one


def rebuilt_network(folder: Path) -> tuple[keras.Model, LoadedModel]:
    """The Keras model of a published one-network version, checked to answer as the exported one does."""
    exported = load_model(folder)
    card = exported.card
    if card.ensemble_of:
        raise DataError(
            f"{folder} is an ensemble of versions {', '.join(str(m.version) for m in card.ensemble_of)}: "
            f"make a new one from its members with `python -m training ensemble`"
        )
    spec = card.input.spec()
    model = rebuild_keras_model(folder, make_architecture(card.training.architecture, spec))
    check_rebuilt(folder, model, exported)
    return model, exported


def rebuilt_ensemble(folder: Path) -> tuple[list[keras.Model], LoadedModel]:
    """The Keras models of a published ensemble's networks, in its card's order, checked together to answer as
    the exported ensemble does."""
    exported = load_model(folder)
    card = exported.card
    if not card.ensemble_of:
        raise DataError(f"{folder} is not an ensemble")
    spec = card.input.spec()
    makes = [
        make_architecture(
            member.architecture,
            replace(spec, height=member.input[0], width=member.input[1]) if member.input else spec,
        )
        for member in card.ensemble_of
    ]
    networks = rebuild_ensemble_networks(folder, makes)
    check_rebuilt(folder, networks, exported)
    return networks, exported


def rebuilt_version(folder: Path) -> tuple[list[keras.Model], LoadedModel]:
    """A published version's networks: its one network, or every network of an ensemble (each keeping its vote)."""
    if read_card(folder / METADATA_FILE).ensemble_of:
        return rebuilt_ensemble(folder)
    network, exported = rebuilt_network(folder)
    return [network], exported


def check_rebuilt(folder: Path, networks: Networks, exported: LoadedModel) -> None:
    """The rebuilt networks' log-odds on random images (over the version's flips) must be the exported ones."""
    spec = exported.card.input.spec()
    probe = np.random.default_rng(0).random((4, *spec.shape), dtype=np.float32)
    _, rebuilt_odds = features_and_log_odds(
        networks, tf.data.Dataset.from_tensor_slices(probe).batch(4), exported.card.test_time_flips
    )
    difference = float(np.max(np.abs(rebuilt_odds - [o.log_odds for o in exported.analyse(probe)])))
    if difference > REBUILD_TOLERANCE:
        raise DataError(f"{folder}: the rebuilt model differs from the exported one by {difference:.2e}")


def calibrate_version(
    disease: str,
    *,
    data_dir: Path,
    models_dir: Path,
    version: int | None = None,
    target_sensitivity: float | None = None,
    test_time_flips: list[str] | None = None,
    kernel_bits: int | None = None,
    probe_limit: int = PROBE_LIMIT,
) -> Path:
    """None keeps the version's own target sensitivity, flips and kernel precision."""
    folder = published_version(models_dir, disease, version)
    networks, exported = rebuilt_version(folder)
    card = exported.card
    spec = card.input.spec()
    config = describe_disease(disease, data_dir)
    split = split_as(samples_of(config, data_dir), card_split_spec(card))
    decoded = decode_split(split, spec)
    data = release_data(config, split, decoded, data_dir, spec, probe_limit)
    new_card = card.model_copy(
        update={
            "format_version": 2,
            "derived_from": card.version,
            "output": OUTPUT_DESCRIPTION,
            "data": card.data.model_copy(update={"split_spec": card_split_spec(card)}),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "test_time_flips": card.test_time_flips if test_time_flips is None else test_time_flips,
            "kernel_bits": card.kernel_bits if kernel_bits is None else kernel_bits,
        }
    )
    return release(
        networks,
        spec,
        data,
        new_card,
        models_dir,
        previous_report=folder / REPORT_DIR,
        target_sensitivity=target_sensitivity or target_sensitivity_of(card),
    )

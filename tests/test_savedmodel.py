from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import write_card
from app.contract.model_store import METADATA_FILE
from app.contract.preprocessing import ColourMode, InputSpec
from app.contract.savedmodel import ModelLoadError, load_model
from tests.model_fixtures import fixture_card

SPEC = InputSpec(height=8, width=8, colour_mode=ColourMode.GRAYSCALE)


def save_module(folder: Path, serve) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})
    write_card(fixture_card("malaria", 1, SPEC, ood_threshold=None), folder / METADATA_FILE)
    return folder


def test_the_signature_is_called_by_its_own_input_name(tmp_path: Path) -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def serve(pixels):  # not named "image", as Keras would name it
        mean = tf.reduce_mean(pixels, axis=[1, 2])
        return {"scores": tf.concat([mean, 1.0 - mean], axis=-1)}

    model = load_model(save_module(tmp_path / "1", serve))
    batch = np.stack([np.full(SPEC.shape, value, np.float32) for value in (0.25, 0.5, 1.0)])
    assert np.allclose(model.predict(batch), [[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])


def test_a_signature_with_two_inputs_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def serve(left, right):
        return {"scores": tf.concat([tf.reduce_mean(left, [1, 2]), tf.reduce_mean(right, [1, 2])], axis=-1)}

    with pytest.raises(ModelLoadError, match="takes 2 inputs"):
        load_model(save_module(tmp_path / "1", serve))

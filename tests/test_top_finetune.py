"""Fine-tuning the top of a network on cached activations: the layers below the cut stay as they were, those
above learn, BatchNorm keeps its statistics, and a cut the network cannot be split at is refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, InputSpec
from training.data.pipeline import decoded_from_arrays
from training.networks.architectures import make_architecture
from training.networks.top_finetune import fine_tune_top, split_at

SPEC = InputSpec(48, 48, ColourMode.GRAYSCALE)


def blobs(count: int, seed: int):
    """Bright-centred images are class 0, dark-centred class 1: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    pixels = rng.integers(60, 120, (count, 48, 48, 1)).astype(np.uint8)
    pixels[labels == 0, 16:32, 16:32] = 230
    return decoded_from_arrays(pixels, labels)


def weights_of(model: keras.Model, name: str) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_layer(name).get_weights()]


def test_only_the_layers_above_the_cut_learn() -> None:
    keras.utils.set_random_seed(1)
    model = make_architecture("paper_cnn", SPEC)
    before = {name: weights_of(model, name) for name in ("conv1", "conv2", "bn3", "conv3", "scores")}
    history, best_epoch, _ = fine_tune_top(
        model, "dropout2", blobs(64, 1), blobs(32, 2), epochs=3, batch_size=16, learning_rate=1e-3,
        sample_weights=None, flips=("horizontal",),
    )  # fmt: skip
    for frozen in ("conv1", "conv2", "bn3"):  # below the cut, and BatchNorm's statistics above it
        assert all(np.array_equal(a, b) for a, b in zip(before[frozen], weights_of(model, frozen), strict=True))
    for trained in ("conv3", "scores"):
        assert not all(np.array_equal(a, b) for a, b in zip(before[trained], weights_of(model, trained), strict=True))
    assert len(history["val_loss"]) == 3 and 1 <= best_epoch <= 3
    assert all(layer.trainable for layer in model.layers if layer.name in ("conv3", "scores"))


def test_the_model_answers_as_bottom_then_top() -> None:
    model = make_architecture("paper_cnn", SPEC)
    bottom, top = split_at(model, "dropout2")
    images = np.random.default_rng(3).random((4, 48, 48, 1)).astype(np.float32)
    through_both = top.predict(bottom.predict(images, verbose=0), verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), through_both, rtol=1e-5, atol=1e-6)


def test_cuts_it_cannot_make_are_refused() -> None:
    with pytest.raises(ValueError, match="no layer 'block99_add'"):
        split_at(make_architecture("paper_cnn", SPEC), "block99_add")
    stages = make_architecture("efficientnet_lite0_stages", InputSpec(64, 64, ColourMode.RGB))
    split_at(stages, "block10_add")  # the end of stage 5: its tap (stage 6) lies above
    with pytest.raises(ValueError, match="also read layers below it"):
        split_at(stages, "top_conv")  # above stage 6, which the head also reads


@pytest.mark.slow  # trains three folds
def test_cross_validation_with_a_frozen_head_then_its_top_fine_tuned(tmp_path, capsys) -> None:
    import json

    from tests.conftest import write_synthetic_dataset
    from training.cli import main

    data = write_synthetic_dataset(tmp_path / "data", per_class=16, size=32)
    recipe = ["--arch", "efficientnet_lite0_stages", "--weights", "none", "--image-size", "32", "--frozen-backbone",
              "--fine-tune-from", "block10_add", "--epochs", "2", "--batch-size", "8"]  # fmt: skip
    reports = ["--folds", "3", "--report-dir", str(tmp_path / "reports")]
    code = main(["cross-validate", "malaria", "--data", str(data), *recipe, *reports])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["folds"] == 3 and 0.0 <= result["summary"]["roc_auc"]["mean"] <= 1.0
    (report,) = (tmp_path / "reports").glob("*[0-9]ep.json")
    assert json.loads(report.read_text())["recipe"]["fine_tune_from"] == "block10_add"
    two = ["cross-validate", "malaria", "--data", str(data), "--folds", "2"]
    assert main(two) == 2 and "at least 3 folds" in capsys.readouterr().err

"""Every architecture of the paper's comparison builds, trains a step, exports and serves; ImageNet
weights load through Keras' own download path, offline, from a local file."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, InputSpec
from training.networks.architectures import APPLICATIONS, ARCHITECTURES, FUNDUS_LESIONS, make_architecture, min_side
from training.networks.model import compile_model

pytestmark = pytest.mark.slow


def tiny_spec(arch: str, colour_mode: ColourMode = ColourMode.GRAYSCALE) -> InputSpec:
    side = max(min_side(arch), 48)
    if arch == FUNDUS_LESIONS:  # colour fundus photographs only
        colour_mode = ColourMode.RGB
    return InputSpec(height=side, width=side, colour_mode=colour_mode)


# Exported and loaded for real: the shipped retinopathy models' architecture (its tapped head is the widest analysis
# graph). The others run the very functions the export traces, eagerly: the export path is theirs too, and tracing
# and loading DenseNet121's three signatures alone took 34 s.
EXPORTED = ("efficientnet_lite0_stages",)
# Lite1 and Lite2 are Lite0's builder and head at another width and depth (test_efficientnet_lite checks their
# stages): training and serving them runs no code Lite0's case does not.
SCALED_LIKE_LITE0 = {f"efficientnet_lite{n}{tail}" for n in (1, 2) for tail in ("", "_stages")}


@pytest.mark.parametrize("arch", [arch for arch in ARCHITECTURES if arch not in SCALED_LIKE_LITE0])
def test_each_architecture_trains_a_step_and_answers_all_three_signatures(arch: str, tmp_path: Path) -> None:
    from app.contract.savedmodel import ANALYSE, EXPLAIN, SERVE, load_model
    from tests.model_fixtures import fixture_card
    from training.networks.servable import distance_layer, servable_endpoints, write_savedmodel
    from training.release.export import stage_version
    from training.release.trust import random_image_statistics

    spec = tiny_spec(arch)
    model = make_architecture(arch, spec)
    assert model.output_shape == (None, 2) and model.layers[-1].name == "scores"
    compile_model(model, learning_rate=1e-3)
    # One step, eagerly: the same gradients, without building a training graph for one call (DenseNet121:
    # 52 s in graph mode, 4.5 s eagerly). Graph-mode training runs in test_train and test_crossval.
    model.run_eagerly = True
    rng = np.random.default_rng(0)
    images = rng.random((4, *spec.shape), dtype=np.float32)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    history = model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    statistics = random_image_statistics(model, spec, 0)
    endpoints = servable_endpoints([model], spec, distance_layer(statistics))
    scores = model(images, training=False).numpy()
    np.testing.assert_allclose(endpoints[SERVE](images), scores, atol=1e-5)
    analysis = endpoints[ANALYSE](images[:1])
    assert np.isfinite(analysis["log_odds"]).all() and np.isfinite(analysis["ood_distance"]).all()
    np.testing.assert_allclose(analysis["scores"], scores[:1], atol=1e-5)
    heatmap = endpoints[EXPLAIN](images[:1])["gradcam"].numpy()
    assert heatmap.shape == (1, spec.height, spec.width) and np.isfinite(heatmap).all() and np.abs(heatmap).max() > 0
    if arch not in EXPORTED:
        return
    with stage_version(tmp_path, "malaria") as staged:
        write_savedmodel(model, spec, statistics, staged.folder)
        folder = staged.publish(fixture_card("malaria", 0, spec, ood_threshold=1e9))
    loaded = load_model(folder)
    (outputs,) = loaded.analyse(images[:1])
    np.testing.assert_allclose(outputs.log_odds, analysis["log_odds"][0], atol=1e-4)
    np.testing.assert_allclose(outputs.ood_distance, analysis["ood_distance"][0], rtol=1e-4)
    np.testing.assert_allclose(loaded.explain(images[:1]), heatmap, atol=1e-4)
    np.testing.assert_allclose(loaded.predict(images), scores, atol=1e-4)


def test_input_sizes_below_an_architectures_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 71x71"):
        make_architecture("xception", InputSpec(height=64, width=64, colour_mode=ColourMode.RGB))
    with pytest.raises(ValueError, match="unknown architecture"):
        make_architecture("alexnet", InputSpec(height=64, width=64, colour_mode=ColourMode.RGB))


def test_grayscale_is_repeated_to_three_channels_so_rgb_weights_apply() -> None:
    gray = make_architecture("resnet50", InputSpec(height=48, width=48, colour_mode=ColourMode.GRAYSCALE))
    rgb = make_architecture("resnet50", InputSpec(height=48, width=48, colour_mode=ColourMode.RGB))
    assert gray.get_layer("conv1_conv").kernel.shape == rgb.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)


def test_imagenet_weights_load_through_keras_download_path_offline(tmp_path: Path, monkeypatch) -> None:
    """`--weights imagenet` asks Keras to fetch the no-top weights file; here the fetch is answered with
    a local file, so the whole loading path runs without internet."""
    import keras.src.utils.file_utils as file_utils

    spec = InputSpec(height=48, width=48, colour_mode=ColourMode.RGB)
    source = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=spec.shape)
    for variable in source.weights:
        variable.assign(np.full(variable.shape, 0.01, dtype=variable.dtype))
    local = tmp_path / "densenet121_notop.weights.h5"
    source.save_weights(local)
    asked: list[str] = []

    def offline_get_file(fname=None, origin=None, **kwargs):
        asked.append(origin)
        return str(local)

    monkeypatch.setattr(file_utils, "get_file", offline_get_file)
    import keras.src.applications.densenet as densenet

    monkeypatch.setattr(densenet.file_utils, "get_file", offline_get_file)
    model = make_architecture("densenet121", spec, weights="imagenet")
    assert asked and "densenet121" in asked[0]
    assert np.allclose(model.get_layer("conv1_conv").kernel.numpy(), 0.01)
    from_path = make_architecture("densenet121", spec, weights=local)  # a local file directly
    assert np.allclose(from_path.get_layer("conv1_conv").kernel.numpy(), 0.01)
    assert set(APPLICATIONS) == {
        "vgg16",
        "resnet50",
        "xception",
        "densenet121",
        "mobilenet_v2",
        "efficientnet_lite0",
        "efficientnet_lite0_stages",
        *SCALED_LIKE_LITE0,
    }


def test_an_applications_network_takes_the_recipes_batchnorm_momentum() -> None:
    """MobileNetV2's own 0.999 would keep its source's statistics through a short fine-tuning run."""
    spec = InputSpec(height=48, width=48, colour_mode=ColourMode.RGB)
    model = make_architecture("mobilenet_v2", spec, bn_momentum=0.9)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52 and {layer.momentum for layer in norms} == {0.9}
    images = np.random.default_rng(0).random((4, *spec.shape), dtype=np.float32)
    first = norms[0]
    inputs_to_first = keras.Model(model.inputs, first.input)(images).numpy()
    batch_mean = inputs_to_first.reshape(-1, inputs_to_first.shape[-1]).mean(axis=0)
    before = first.moving_mean.numpy().copy()
    model(images, training=True)
    # One step moves the moving mean a tenth of the way to the batch's mean (at 0.999: a thousandth).
    np.testing.assert_allclose(first.moving_mean.numpy() - before, 0.1 * (batch_mean - before), rtol=1e-3, atol=1e-6)

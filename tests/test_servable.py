"""The exported signatures: serving_default unchanged, analyse consistent with it, Grad-CAM that points
at the evidence, and an old version's weights put back without change."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.contract.preprocessing import ColourMode, InputSpec
from app.contract.savedmodel import load_model
from app.contract.scoring import log_odds_from_scores
from tests.model_fixtures import export_legacy, export_untrained
from training.networks.model import compile_model, make_model
from training.networks.servable import analysis_model, features_and_log_odds, rebuild_keras_model
from training.release.trust import fit_ood

SIZE = 64  # a quadrant is 4x4 cells of the last convolution's map: enough to place the evidence
SPEC = InputSpec(height=SIZE, width=SIZE, colour_mode=ColourMode.GRAYSCALE)


def quadrant_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The class is decided by where a bright square is: top-left quadrant = infected (label 0),
    any other quadrant = uninfected. Brightness alone tells nothing."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.3, 0.05, (count, SIZE, SIZE, 1)).clip(0, 1).astype(np.float32)
    labels = np.arange(count) % 2
    half, side = SIZE // 2, 10
    for image, label in zip(images, labels, strict=True):
        quadrant = 0 if label == 0 else rng.integers(1, 4)
        top, left = (quadrant // 2) * half, (quadrant % 2) * half
        y, x = top + rng.integers(2, half - side - 2), left + rng.integers(2, half - side - 2)
        image[y : y + side, x : x + side] = 0.95
    return images, labels


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(3)
    images, labels = quadrant_images(480, seed=1)
    model = make_model(SPEC, bn_momentum=0.9)
    compile_model(model, learning_rate=1e-3)
    model.fit(images, tf.one_hot(labels, 2), epochs=6, batch_size=32, verbose=0)
    return export_untrained(tmp_path_factory.mktemp("quadrant"), "malaria", size=SIZE, model=model)


@pytest.mark.slow  # the quadrant model trains for about 30 s on 2 cores (4 epochs already learn it: 6 for a margin)
def test_grad_cam_mass_falls_in_the_quadrant_that_decides_the_class(quadrant_model: Path) -> None:
    from app.runtime.explanations import class_heatmap

    model = load_model(quadrant_model)
    images, labels = quadrant_images(60, seed=99)
    infected = images[labels == 0]
    outputs = model.analyse(infected)
    assert np.mean([o.log_odds > 0 for o in outputs]) >= 0.9, "the toy model did not learn the task"
    maps = model.explain(infected)
    assert maps.shape == (len(infected), SIZE, SIZE)
    shares = []
    for signed in maps:
        heatmap = class_heatmap(signed, 0)
        assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
        shares.append(heatmap[: SIZE // 2, : SIZE // 2].sum() / heatmap.sum())
    assert np.mean(shares) >= 0.6, f"mean share of the heatmap in the deciding quadrant: {np.mean(shares):.2f}"


@pytest.mark.slow
def test_analyse_agrees_with_serving_default_and_does_not_saturate(quadrant_model: Path) -> None:
    model = load_model(quadrant_model)
    images, _ = quadrant_images(16, seed=5)
    scores = model.predict(images)
    outputs = model.analyse(images)
    log_odds = np.array([o.log_odds for o in outputs])
    unsaturated = (scores > 1e-6).all(axis=1) & (scores < 1 - 1e-6).all(axis=1)
    np.testing.assert_allclose(log_odds[unsaturated], log_odds_from_scores(scores)[unsaturated], atol=1e-3)
    assert all(np.isfinite(o.ood_distance) for o in outputs)


@pytest.fixture(scope="module")
def plain_and_flipped(quadrant_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The quadrant model's weights exported again with horizontal and vertical test-time flips."""
    from tests.model_fixtures import fixture_card
    from training.networks.servable import write_savedmodel
    from training.release.export import stage_version
    from training.release.trust import random_image_statistics

    model = rebuild_keras_model(quadrant_model, make_model(SPEC))
    with stage_version(tmp_path_factory.mktemp("flipped"), "malaria") as staged:
        write_savedmodel(
            model, SPEC, random_image_statistics(model, SPEC, seed=1), staged.folder, flips=("horizontal", "vertical")
        )
        flipped = staged.publish(fixture_card("malaria", 0, SPEC))
    return load_model(quadrant_model), load_model(flipped)


@pytest.mark.slow
def test_flipped_export_answers_the_mean_probability_over_the_image_and_its_flips(plain_and_flipped) -> None:
    from app.contract.scoring import calibrated_probability

    plain, flipped = plain_and_flipped
    images, _ = quadrant_images(6, seed=11)
    views = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]  # both flips and the two together
    per_view = np.array([[o.log_odds for o in plain.analyse(view)] for view in views])
    expected = calibrated_probability(per_view).mean(axis=0)
    answered = calibrated_probability(np.array([o.log_odds for o in flipped.analyse(images)]))
    np.testing.assert_allclose(answered, expected, atol=1e-5)
    assert not np.allclose(answered, calibrated_probability(per_view[0]), atol=1e-3)  # the flips changed it
    # serving_default agrees, as scores that normalise to the same probability
    np.testing.assert_allclose(flipped.predict(images)[:, 0] / flipped.predict(images).sum(axis=1), expected, atol=1e-5)
    # the distance is the image's as sent, unchanged by the flips
    np.testing.assert_allclose(
        [o.ood_distance for o in flipped.analyse(images)], [o.ood_distance for o in plain.analyse(images)], rtol=1e-4
    )


@pytest.mark.slow
def test_flipped_export_answers_a_flipped_image_alike_and_flips_its_heatmap(plain_and_flipped) -> None:
    _, flipped = plain_and_flipped
    images, _ = quadrant_images(4, seed=12)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    np.testing.assert_allclose(
        [o.log_odds for o in flipped.analyse(mirrored)], [o.log_odds for o in flipped.analyse(images)], atol=1e-4
    )
    np.testing.assert_allclose(flipped.explain(mirrored), flipped.explain(images)[:, :, ::-1], atol=1e-4)


def test_mean_over_views_does_not_saturate() -> None:
    from training.networks.servable import mean_over_views

    z = tf.constant([[60.0, -60.0, 0.0], [60.0, -60.0, 2.0]])  # 2 views x 3 images
    np.testing.assert_allclose(
        mean_over_views(z, 2).numpy(),
        [60.0, -60.0, np.log((0.5 + 1 / (1 + np.exp(-2))) / (0.5 + 1 / (1 + np.exp(2))))],
        rtol=1e-5,
    )
    np.testing.assert_allclose(mean_over_views(z[:1], 1).numpy(), z[0].numpy(), atol=1e-5)


def test_the_exported_distance_is_the_fitted_one(tmp_path: Path) -> None:
    from tests.model_fixtures import fixture_card
    from training.networks.servable import write_savedmodel
    from training.release.export import stage_version

    keras.utils.set_random_seed(0)
    model = make_model(SPEC)
    images, labels = quadrant_images(64, seed=2)
    features, _ = features_and_log_odds(model, tf.data.Dataset.from_tensor_slices(images).batch(16))
    statistics = fit_ood(features, labels)
    with stage_version(tmp_path, "malaria") as staged:
        write_savedmodel(model, SPEC, statistics, staged.folder)
        folder = staged.publish(fixture_card("malaria", 0, SPEC, ood_threshold=1.0))
    probe, _ = quadrant_images(8, seed=7)
    probe_features, _ = features_and_log_odds(model, tf.data.Dataset.from_tensor_slices(probe).batch(8))
    served = [o.ood_distance for o in load_model(folder).analyse(probe)]
    np.testing.assert_allclose(served, statistics.distances(probe_features), rtol=1e-3)


def test_an_old_version_is_rebuilt_with_identical_answers(tmp_path: Path) -> None:
    folder = export_legacy(tmp_path, "malaria", size=50)
    spec = InputSpec(height=50, width=50, colour_mode=ColourMode.GRAYSCALE)
    rebuilt = rebuild_keras_model(folder, make_model(spec))
    probe = np.random.default_rng(0).random((4, *spec.shape), dtype=np.float32)
    np.testing.assert_allclose(rebuilt.predict(probe, verbose=0), load_model(folder).predict(probe), atol=1e-6)


def test_the_analysis_features_are_every_convolution_pooled_the_head_input_and_the_input_statistics() -> None:
    from training.networks.servable import CoarseLayout, GradientHistogram, IntensityHistogram, conv_layers, head

    model = make_model(SPEC)
    images = np.random.default_rng(3).random((2, *SPEC.shape), dtype=np.float32)
    features = analysis_model(model)(images)["features"].numpy()
    pooled = [keras.Model(model.inputs, conv.output)(images).numpy().mean(axis=(1, 2)) for conv in conv_layers(model)]
    head_input = keras.Model(model.inputs, head(model).input)(images).numpy()
    statistics = [layer(images).numpy() for layer in (IntensityHistogram(), GradientHistogram(), CoarseLayout())]
    expected = np.concatenate([*pooled, head_input, *statistics], axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_the_feature_grid_of_the_paper_cnn_sits_in_the_middle_of_the_input() -> None:
    from training.networks.servable import conv_layers, feature_grid

    model = make_model(SPEC)
    assert feature_grid(model, conv_layers(model)[-1]) == (18.5, 8.0)  # 8 x 8 centres at 96 px: 18.5 ... 74.5


def test_the_feature_grid_of_a_depthwise_network_counts_its_depthwise_strides() -> None:
    """EfficientNet-Lite0 strides by 32 in all, four times of it in depthwise convolutions: a grid taken from the
    Conv2D layers alone would put the Grad-CAM map at a sixteenth of its size."""
    from app.contract.preprocessing import ColourMode, InputSpec
    from training.networks.architectures import make_architecture
    from training.networks.servable import conv_layers, feature_grid

    model = make_architecture("efficientnet_lite0", InputSpec(height=64, width=64, colour_mode=ColourMode.RGB))
    assert feature_grid(model, conv_layers(model)[-1])[1] == 32.0


def test_the_intensity_histogram_counts_each_value_in_its_bin() -> None:
    from training.networks.servable import IntensityHistogram

    images = np.zeros((2, 4, 4, 1), np.float32)
    images[0, :2] = 1.0  # half white (1.0 falls in the last bin), half black
    images[1] = 0.51  # all in bin 8 of 16
    histogram = IntensityHistogram()(images).numpy()
    assert histogram[0, 0] == histogram[0, 15] == 0.5 and histogram[1, 8] == 1.0
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0)


def test_the_gradient_histogram_counts_each_neighbour_difference_in_its_bin() -> None:
    from training.networks.servable import GradientHistogram

    images = np.zeros((3, 5, 5, 3), np.float32)
    images[1, :, 2:] = 0.1  # one vertical edge of 0.1: the column before it differs by 0.1 (bin 6 of 16 on 0.25)
    images[2] = np.indices((5, 5)).sum(axis=0)[..., np.newaxis] % 2  # a checkerboard: every difference 1 + 1
    histogram = GradientHistogram()(images).numpy()
    assert histogram[0, 0] == 1.0  # flat: no difference
    assert histogram[1, 6] == pytest.approx(4 / 16) and histogram[1, 0] == pytest.approx(12 / 16)
    assert histogram[2, 15] == 1.0  # beyond the top: the last bin
    np.testing.assert_allclose(histogram.sum(axis=1), 1.0)


def test_the_coarse_layout_is_the_mean_of_each_grid_cell() -> None:
    from training.networks.servable import CoarseLayout

    images = np.zeros((1, 9, 8, 3), np.float32)
    images[0, :4, :2] = 1.0  # the top-left cell of a 4 x 4 grid of 2 x 2 cells (the ninth row left out)
    images[0, 8] = 1.0  # the row beyond a multiple of 4: not counted
    images[0, 6:8, 6:8, 0] = 0.6  # the bottom-right cell, in one channel of three
    layout = CoarseLayout()(images).numpy().reshape(4, 4)
    assert layout[0, 0] == layout[1, 0] == 1.0 and layout[3, 3] == pytest.approx(0.2)
    assert layout.sum() == pytest.approx(2.2)


def test_the_ood_distance_with_many_features_keeps_its_largest_directions_and_the_rest_as_one_variance() -> None:
    """Beyond MAX_OOD_COMPONENTS features the whitening is F x k; the graph and numpy agree, and the distance
    of a point off every kept direction still grows (it is not dropped)."""
    from training.networks.servable import MahalanobisDistance
    from training.release.trust import MAX_OOD_COMPONENTS, fit_ood

    rng = np.random.default_rng(0)
    size = MAX_OOD_COMPONENTS + 60
    features = rng.normal(size=(900, size)) * np.linspace(3, 0.5, size)
    labels = np.arange(900) % 2
    statistics = fit_ood(features, labels)
    assert statistics.whitening.shape == (size, MAX_OOD_COMPONENTS) and statistics.residual_variance is not None
    probe = rng.normal(size=(5, size)) * np.linspace(3, 0.5, size)
    graph = MahalanobisDistance(statistics)(probe.astype(np.float32)).numpy()
    np.testing.assert_allclose(graph, statistics.distances(probe), rtol=1e-3)
    far = probe.copy()
    far[:, -1] += 40  # along the smallest direction, one not kept
    assert np.all(statistics.distances(far) > statistics.distances(probe) + 5)
    small = fit_ood(features[:, :100], labels)
    assert small.residual_variance is None and small.whitening.shape == (100, 100)  # exact, as before


class CountingAnalysis:
    """An analysis model that records how many images each call reads."""

    def __init__(self, model: keras.Model) -> None:
        self.model, self.inputs, self.rows = model, model.inputs, []

    def __call__(self, images, training: bool = False):
        self.rows.append(int(images.shape[0]))
        return self.model(images, training=training)


def test_a_flip_invariant_member_reads_the_image_once_and_answers_as_every_view_would(monkeypatch) -> None:
    from training.networks import servable
    from training.networks.architectures import FUNDUS_LESIONS, make_architecture

    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    model = make_architecture(FUNDUS_LESIONS, spec)
    rng = np.random.default_rng(3)
    head = model.get_layer("scores")
    head.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in head.get_weights()])
    smooth = tf.nn.avg_pool2d(tf.constant(rng.random((2, 160, 160, 3)), tf.float32), 33, 1, "VALID")
    image = tf.image.resize(smooth, (128, 128)) * 0.8 + 0.1  # no two pixels tie for the brightest (the disc)
    flips = ("horizontal", "vertical")
    grids = [servable.grid_on_input(model, spec)]

    def answer(analysis):
        outputs = servable.analysed([model], [analysis], image, flips)
        return outputs["log_odds"].numpy(), servable.hires_cam([model], [analysis], grids, image, flips, spec).numpy()

    counted = CountingAnalysis(servable.analysis_model(model))
    once_odds, once_cam = answer(counted)
    assert counted.rows == [2, 2]  # the two images, not their four views each
    monkeypatch.setattr(servable, "flip_invariant", lambda member: False)
    every_view = CountingAnalysis(servable.analysis_model(model))
    odds, cam = answer(every_view)
    assert every_view.rows == [8, 8]
    np.testing.assert_allclose(once_odds, odds, atol=1e-3)
    # A quantile's gradient lands on one pixel, and two nearly equal pixels may trade that rank between views
    # (the rotations interpolate): measured 2 pixels of 32,768 apart, 0.7% of the heatmaps' mass.
    assert np.abs(once_cam - cam).sum() <= 0.02 * np.abs(cam).sum()
    assert np.abs(cam).max() > 0


@pytest.mark.parametrize("kernel_bits", [32, 16])
def test_a_network_without_variables_before_its_head_is_explained_when_its_kernels_are_stored_narrower(
    tmp_path: Path, kernel_bits: int
) -> None:
    # fundus_lesions' one kernel (a fixed identity) is read as a constant at 16 bits: the heatmap's gradient
    # must still reach it (the first retinopathy ensemble with it failed there)
    from training.networks.architectures import FUNDUS_LESIONS, make_architecture

    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    model = make_architecture(FUNDUS_LESIONS, spec)
    folder = export_untrained(
        tmp_path,
        "retinopathy",
        colour_mode="rgb",
        size=128,
        model=model,
        flips=("horizontal",),
        kernel_bits=kernel_bits,
    )
    image = np.random.default_rng(5).random((1, 128, 128, 3), dtype=np.float32)
    heatmap = load_model(folder).explain(image)
    assert heatmap.shape == (1, 128, 128)
    assert np.isfinite(heatmap).all() and np.abs(heatmap).max() > 0


def test_an_ensembles_distance_reads_its_learnt_members_not_its_lesion_network() -> None:
    from training.networks import servable
    from training.networks.architectures import FUNDUS_LESIONS, make_architecture

    spec = InputSpec(height=128, width=128, colour_mode=ColourMode.RGB)
    learnt, lesions = make_model(spec), make_architecture(FUNDUS_LESIONS, spec)
    members = [learnt, lesions]
    assert servable.distance_members(members) == [learnt]
    assert servable.distance_members([lesions]) == [lesions]  # alone, it keeps its own distance
    own = int(analysis_model(learnt).output["features"].shape[-1])
    assert servable.feature_widths(members) == [own]
    image = tf.constant(np.random.default_rng(2).random((2, 128, 128, 3)), tf.float32)
    outputs = servable.analysed(members, [analysis_model(member) for member in members], image, ())
    np.testing.assert_allclose(outputs["features"], analysis_model(learnt)(image)["features"], rtol=1e-5)
    assert outputs["log_odds"].shape == (2,)  # both members still answer

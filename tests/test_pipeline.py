from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.contract.preprocessing import ColourMode, Enhancement, InputSpec
from tests.images import gradient, image_bytes, model_input
from training.data.pipeline import decode_samples, evaluation_batches, training_batches
from training.data.samples import find_samples

SPEC = InputSpec(height=50, width=50, colour_mode=ColourMode.GRAYSCALE)


@pytest.mark.parametrize(
    "spec", [SPEC, InputSpec(50, 50, ColourMode.GRAYSCALE, Enhancement.CONTRAST)], ids=["plain", "contrast"]
)
def test_pipeline_feeds_the_model_exactly_what_the_service_feeds_it(synthetic_data: Path, spec: InputSpec) -> None:
    samples = find_samples(synthetic_data, "malaria")[:10]
    # A JPEG too, so that reduced-size decoding goes through both paths.
    jpeg = samples[0].path.with_suffix(".jpg")
    jpeg.write_bytes(image_bytes(gradient(300, 200), "JPEG", quality=90))
    samples[0] = type(samples[0])(path=jpeg, label=samples[0].label, group=samples[0].group)
    decoded = decode_samples(samples, spec)
    ((images, labels),) = evaluation_batches(decoded, batch_size=len(samples)).take(1)
    for index, sample in enumerate(samples):
        served = model_input(sample.path.read_bytes(), spec, max_pixels=50_000_000)
        np.testing.assert_array_equal(images[index].numpy(), served)
    np.testing.assert_array_equal(labels.numpy().argmax(axis=1), [s.label for s in samples])


def test_unreadable_files_are_skipped_and_counted(synthetic_data: Path) -> None:
    samples = find_samples(synthetic_data, "malaria")
    samples[0].path.write_bytes(b"not an image at all")
    samples[1].path.write_bytes(samples[2].path.read_bytes()[:60])  # truncated PNG
    decoded = decode_samples(samples, SPEC)
    assert decoded.size == len(samples) - 2
    assert decoded.unreadable == sorted([str(samples[0].path), str(samples[1].path)])


def test_training_batches_are_one_hot_weighted_and_reshuffled(synthetic_data: Path) -> None:
    decoded = decode_samples(find_samples(synthetic_data, "malaria"), SPEC)
    batches = training_batches(decoded, batch_size=16, seed=3, class_weights={0: 2.0, 1: 0.5})
    first_epoch = [labels.numpy() for _, labels, _ in batches]
    images, labels, weights = next(iter(batches))
    assert images.shape[1:] == SPEC.shape and images.dtype.name == "float32"
    assert labels.shape[1] == 2 and set(np.unique(labels.numpy())) == {0.0, 1.0}
    np.testing.assert_array_equal(weights.numpy(), np.where(labels.numpy()[:, 0] == 1, 2.0, 0.5))
    second_epoch = [labels.numpy() for _, labels, _ in batches]
    assert sum(len(b) for b in first_epoch) == decoded.size
    assert any(not np.array_equal(a, b) for a, b in zip(first_epoch, second_epoch, strict=True))


@pytest.mark.parametrize("flip", [True, False])
def test_augmentation_keeps_shape_and_range(synthetic_data: Path, flip: bool) -> None:
    from training.data.pipeline import make_augmenter

    decoded = decode_samples(find_samples(synthetic_data, "malaria"), SPEC)
    augmenter = make_augmenter(SPEC, flip_horizontal=flip, seed=1)
    images, _, _ = next(iter(training_batches(decoded, batch_size=8, seed=1, augmenter=augmenter)))
    plain, _, _ = next(iter(training_batches(decoded, batch_size=8, seed=1)))
    assert images.shape == plain.shape == (8, *SPEC.shape)
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 1.0 + 1e-6
    # the same batch without the augmenter is another one: augmentation changed the pixels
    assert not np.allclose(images.numpy(), plain.numpy())
    assert float(images.numpy().max()) > 0.5  # and left images, not blanks


@pytest.mark.parametrize("enhancement, surround", [("none", 0.0), ("fundus", 128 / 255)])
def test_augmentation_fills_what_it_uncovers_with_the_images_own_surround(enhancement: str, surround: float) -> None:
    from app.contract.preprocessing import Enhancement
    from training.data.pipeline import decoded_from_arrays, make_augmenter

    spec = InputSpec(height=32, width=32, colour_mode=ColourMode.RGB, enhancement=Enhancement(enhancement))
    pixels = np.full((64, *spec.shape), round(surround * 255), np.uint8)
    pixels[:, 8:24, 8:24] = 200  # something in the middle of a uniform surround
    augmenter = make_augmenter(spec, flip_horizontal=True, seed=3)
    decoded = decoded_from_arrays(pixels, np.zeros(64, np.int32))
    images, _, _ = next(iter(training_batches(decoded, batch_size=64, seed=1, augmenter=augmenter)))
    corners = images.numpy()[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.allclose(corners, round(surround * 255) / 255, atol=0.01)  # no border of another colour appears


def test_stain_jitter_moves_each_images_colour_its_own_way_and_keeps_black_black() -> None:
    from training.data.pipeline import HUE_SHIFT, decoded_from_arrays, make_augmenter

    spec = InputSpec(height=16, width=16, colour_mode=ColourMode.RGB)
    pixels = np.zeros((32, *spec.shape), np.uint8)
    pixels[:, 4:12, 4:12] = (180, 90, 160)  # a purple stain on a black surround, as a segmented cell
    augmenter = make_augmenter(spec, flip_horizontal=False, seed=5, geometric=False, stain_jitter=True)
    decoded = decoded_from_arrays(pixels, np.zeros(32, np.int32))
    images, _, _ = next(iter(training_batches(decoded, batch_size=32, seed=1, augmenter=augmenter)))
    images = images.numpy()
    assert np.all(images[:, :4] == 0.0) and np.all(images[:, :, :4] == 0.0)  # the surround stays black
    stains = images[:, 8, 8]  # one colour per image
    assert len(np.unique(stains.round(3), axis=0)) == 32  # each image drew its own jitter
    import tensorflow as tf

    hues = tf.image.rgb_to_hsv(stains).numpy()[:, 0]
    purple = tf.image.rgb_to_hsv(np.array([[180, 90, 160]], np.float32) / 255).numpy()[0, 0]
    shift = (hues - purple + 0.5) % 1.0 - 0.5
    assert np.abs(shift).max() <= HUE_SHIFT + 1e-4 and np.abs(shift).max() > HUE_SHIFT / 4  # within range, and used
    assert np.all(images <= 1.0) and np.all(images >= 0.0)


def test_intensity_jitter_changes_each_images_gain_and_gamma_keeping_black_black_and_the_order() -> None:
    from training.data.pipeline import GAIN_SCALE, LOG_GAMMA, decoded_from_arrays, make_augmenter

    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))[..., np.newaxis]  # 0 (black) to 240
    spec = InputSpec(height=16, width=16, colour_mode=ColourMode.GRAYSCALE)
    augmenter = make_augmenter(spec, flip_horizontal=False, seed=3, geometric=False, intensity_jitter=True)
    decoded = decoded_from_arrays(np.repeat(ramp[np.newaxis], 32, axis=0), np.zeros(32, np.int32))
    images, _, _ = next(iter(training_batches(decoded, batch_size=32, seed=1, augmenter=augmenter)))
    rows = images.numpy()[:, 0, :, 0]  # one ramp per image
    assert np.all(rows[:, 0] == 0.0)  # black stays black
    assert np.all(np.diff(rows, axis=1) >= 0)  # no pixel overtakes a brighter one
    assert len(np.unique(rows.round(3), axis=0)) == 32  # each image drew its own
    middle = rows[:, 8]  # 128/255 as sent
    lowest = (128 / 255) ** np.exp(LOG_GAMMA) * (1 - GAIN_SCALE)
    highest = (128 / 255) ** np.exp(-LOG_GAMMA) * (1 + GAIN_SCALE)
    assert middle.min() >= lowest - 1e-4 and middle.max() <= highest + 1e-4  # within range
    assert middle.max() - middle.min() > (highest - lowest) / 3  # and used
    assert np.array_equal(augmenter(images, training=False).numpy(), images.numpy())  # served images untouched


def _square_proportions(images: np.ndarray) -> np.ndarray:
    """Width over height of the bright square in each N x H x W x 1 image."""
    bright = images[..., 0] > 0.5
    return bright.any(axis=1).sum(axis=1) / bright.any(axis=2).sum(axis=1)


def test_aspect_jitter_stretches_width_apart_from_height_where_plain_zoom_keeps_the_shape() -> None:
    from training.data.pipeline import decoded_from_arrays, make_augmenter

    square = np.zeros((64, 64, 1), np.uint8)
    square[16:48, 16:48] = 255  # 32 x 32 in the middle: zoom within 30% keeps it inside the frame
    spec = InputSpec(height=64, width=64, colour_mode=ColourMode.GRAYSCALE)
    decoded = decoded_from_arrays(np.repeat(square[np.newaxis], 64, axis=0), np.zeros(64, np.int32))
    proportions = {}
    for aspect_jitter in (False, True):
        augmenter = make_augmenter(spec, flip_horizontal=False, seed=5, aspect_jitter=aspect_jitter)
        images, _, _ = next(iter(training_batches(decoded, batch_size=64, seed=1, augmenter=augmenter)))
        proportions[aspect_jitter] = _square_proportions(images.numpy())
    assert np.abs(proportions[False] - 1).max() < 0.15  # one zoom for both sides (rotation shifts a pixel or two)
    stretched = proportions[True]
    assert stretched.min() < 0.85 and stretched.max() > 1.2  # narrower and wider, each drawn per image
    assert stretched.min() > 0.55 and stretched.max() < 1.6  # within ASPECT_ZOOM's range


def test_stain_jitter_refuses_grayscale_and_no_augmentation_is_none() -> None:
    from training.data.pipeline import make_augmenter

    with pytest.raises(ValueError, match="RGB"):
        make_augmenter(SPEC, flip_horizontal=True, seed=1, stain_jitter=True)
    assert make_augmenter(SPEC, flip_horizontal=True, seed=1, geometric=False) is None


def test_dihedral_augmentation_shows_each_image_in_one_of_its_eight_symmetries() -> None:
    from training.data.pipeline import decoded_from_arrays, make_augmenter

    spec = InputSpec(height=8, width=8, colour_mode=ColourMode.RGB)
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)  # every pixel distinct: each symmetry tells
    symmetries = [np.rot90(image, k) for k in range(4)]
    symmetries += [np.fliplr(turned) for turned in symmetries]
    augmenter = make_augmenter(spec, flip_horizontal=False, seed=2, geometric=False, dihedral=True)
    decoded = decoded_from_arrays(np.repeat(image[np.newaxis], 64, axis=0), np.zeros(64, np.int32))
    images, _, _ = next(iter(training_batches(decoded, batch_size=64, seed=1, augmenter=augmenter)))
    seen = set()
    for augmented in np.rint(images.numpy() * 255).astype(np.uint8):
        matches = [index for index, symmetry in enumerate(symmetries) if np.array_equal(augmented, symmetry)]
        assert len(matches) == 1  # exactly a symmetry of the image: nothing cropped, padded or blended
        seen.add(matches[0])
    assert len(seen) == 8  # and all eight are drawn
    batch = images.numpy()
    np.testing.assert_array_equal(augmenter(batch, training=False).numpy(), batch)  # inference leaves images be
    with pytest.raises(ValueError, match="square"):
        make_augmenter(InputSpec(8, 6, ColourMode.RGB), flip_horizontal=False, seed=2, dihedral=True)


def test_prediction_batches_are_bounded_in_pixels_over_every_view_and_keep_every_image_in_order() -> None:
    from training.data.pipeline import PREDICTION_BATCH_PIXELS, decoded_from_arrays, prediction_batches

    side = 448
    pixels = np.arange(25, dtype=np.uint8)[:, None, None, None] * np.ones((1, side, side, 3), np.uint8)
    decoded = decoded_from_arrays(pixels, np.zeros(25, dtype=np.int64))
    per_call = PREDICTION_BATCH_PIXELS // (side * side)  # 10 images of 448 px
    sizes = [len(batch) for batch in prediction_batches(decoded, batch_size=64)]
    assert sizes == [per_call, per_call, 25 - 2 * per_call]
    under_four_views = [len(batch) for batch in prediction_batches(decoded, batch_size=64, views=4)]
    assert max(under_four_views) == per_call // 4 and sum(under_four_views) == 25
    assert [len(batch) for batch in prediction_batches(decoded, batch_size=3)][:2] == [3, 3]  # the caller's cap holds
    firsts = np.concatenate([batch[:, 0, 0, 0].numpy() for batch in prediction_batches(decoded, batch_size=64)])
    np.testing.assert_allclose(firsts, np.arange(25) / 255, rtol=1e-6)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.preprocessing import ColourMode, Enhancement, InputSpec
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
    from app.preprocessing import Enhancement
    from training.data.pipeline import decoded_from_arrays, make_augmenter

    spec = InputSpec(height=32, width=32, colour_mode=ColourMode.RGB, enhancement=Enhancement(enhancement))
    pixels = np.full((64, *spec.shape), round(surround * 255), np.uint8)
    pixels[:, 8:24, 8:24] = 200  # something in the middle of a uniform surround
    augmenter = make_augmenter(spec, flip_horizontal=True, seed=3)
    decoded = decoded_from_arrays(pixels, np.zeros(64, np.int32))
    images, _, _ = next(iter(training_batches(decoded, batch_size=64, seed=1, augmenter=augmenter)))
    corners = images.numpy()[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.allclose(corners, round(surround * 255) / 255, atol=0.01)  # no border of another colour appears

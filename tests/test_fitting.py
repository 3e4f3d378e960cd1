"""Fitting with a recipe: class weights, and weights that balance each site's classes."""

from __future__ import annotations

import numpy as np

from training.data.pipeline import decoded_from_arrays, training_batches
from training.networks.fitting import balanced_class_weights, balanced_within_strata


def test_each_site_and_class_weighs_the_same_in_the_loss() -> None:
    """Site a: 3 infected, 1 uninfected; site b: 1 infected, 3 uninfected. Each cell ends up weighing 2."""
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    sites = ["a", "a", "a", "a", "b", "b", "b", "b"]
    weights = balanced_within_strata(labels, sites)
    assert np.allclose(weights, [2 / 3, 2 / 3, 2 / 3, 2, 2, 2 / 3, 2 / 3, 2 / 3])
    for site in "ab":
        for label in (0, 1):
            cell = np.array([s == site and y == label for s, y in zip(sites, labels)])
            assert weights[cell].sum() == 2.0
    assert balanced_class_weights(labels) == {0: 1.0, 1: 1.0}  # blind to the sites: the shortcut stays


def test_per_image_weights_travel_with_their_images_through_shuffling() -> None:
    pixels = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1) * np.ones((6, 4, 4, 1), np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    weights = np.array([10, 11, 12, 13, 14, 15], np.float32)
    decoded = decoded_from_arrays(pixels, labels)
    seen = {}
    for images, _, batch_weights in training_batches(decoded, batch_size=4, seed=3, sample_weights=weights):
        for image, weight in zip(images.numpy(), batch_weights.numpy()):
            seen[int(round(image[0, 0, 0] * 255))] = float(weight)
    assert seen == {index: 10.0 + index for index in range(6)}


def test_a_frozen_backbone_learns_its_head_on_kernels_rounded_as_the_export_stores_them() -> None:
    """With Recipe.kernel_bits 8, every backbone kernel is on its int8 grid from the start (frozen, it stays
    there), so the head is fitted on the features the export computes."""
    from dataclasses import replace

    from app.contract.preprocessing import ColourMode, InputSpec
    from training.data.config import MEDSCAN
    from training.networks.fitting import fit_model
    from training.networks.servable import head
    from training.networks.stored_kernels import is_kernel, rounded

    spec = InputSpec(height=64, width=64, colour_mode=ColourMode.RGB)
    rng = np.random.default_rng(4)
    labels = np.arange(24) % 2
    pixels = rng.integers(0, 255, (24, 64, 64, 3)).astype(np.uint8)
    pixels[labels == 0, :20, :20] = 250
    part = decoded_from_arrays(pixels, labels)

    def backbone_kernels(bits: int) -> list[np.ndarray]:
        recipe = replace(MEDSCAN, epochs=1, batch_size=8, frozen_backbone=True, kernel_bits=bits)
        model = fit_model(spec, recipe, part, part, seed=1, arch="efficientnet_lite0_stages").model
        kept = head(model).kernel
        return [np.asarray(v.numpy()) for v in model.variables if is_kernel(v) and v.path != kept.path]

    backbone = backbone_kernels(8)
    assert backbone and all(np.array_equal(kernel, rounded(kernel, 8)) for kernel in backbone)
    unrounded = backbone_kernels(32)
    assert not all(np.array_equal(kernel, rounded(kernel, 8)) for kernel in unrounded)

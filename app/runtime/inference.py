"""The one inference pipeline: every route (ours, the protocols, the web page) adapts to it.

bytes (or already-preprocessed arrays) -> admit -> decode -> batched model call -> calibrate ->
threshold -> out-of-distribution check -> (Grad-CAM) -> a typed `Screening` per image. An image that
cannot be used gives its own error in its place; the others are still answered.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.contract import modality, site_shift
from app.contract.dicom import dicom_decoded_bytes, looks_like_dicom
from app.contract.image_errors import ImageError, UnscorableImage
from app.contract.modality import Modality
from app.contract.model_card import ModelCard, OutOfDistribution
from app.contract.preprocessing import (
    DecodedImage,
    Enhancement,
    InputSpec,
    decode,
    decode_opened,
    decoded_side,
    load_first_frame,
    model_region,
    read_header,
    scale,
)
from app.contract.savedmodel import ExplanationUnavailable, ImageOutputs
from app.contract.scoring import (
    DEFAULT_THRESHOLD,
    POSITIVE,
    as_percentages,
    calibrated_score,
    label_index,
    prior_shift,
    shifted_score,
)
from app.runtime.decode_budget import FUNDUS_WORKING_COPIES, WORKING_COPIES, DecodeBudget, decoded_bytes
from app.runtime.errors import (
    DecodeBusy,
    EmptyUpload,
    InvalidInput,
    InvalidPrevalence,
    InvalidThreshold,
    PrevalenceUnavailable,
    TooManyImages,
)
from app.runtime.explanations import class_heatmap, overlay, png_bytes
from app.runtime.modality_check import KindAnswer, ModalityCheck
from app.runtime.registry import ModelRegistry, ServedModel
from app.settings import Settings

if TYPE_CHECKING:
    from app.runtime.metrics import ServiceMetrics


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # H x W in [0, 1] at the model's input resolution, for the answered class
    overlay_png: bytes  # the heatmap over the image as sent


@dataclass(frozen=True)
class Screening:
    disease: str
    model_version: int
    label: str
    score: float  # calibrated P(infected), unrounded
    probabilities: dict[str, float]  # percent per class, rounded, summing to 100
    threshold: float
    in_distribution: bool | None  # None: the version has no out-of-distribution statistics
    ood_distance: float | None
    ood_threshold: float | None
    image_size: tuple[int, int] | None  # (width, height) as sent; None for arrays
    explanation: Explanation | None
    intended_use: str
    distance_percentile: float | None = None  # among the validation part's distances (app/contract/site_shift.py)
    grayscale_source: bool = False  # a colour model answered from an image without colour
    colour_source: bool = False  # a gray-modality model sent a colour picture: the wrong kind of image
    kind: KindAnswer | None = None  # the modality check's answer, where the service has one for this model
    prevalence: float | None = None  # the share of disease `score` holds at: the clinic's, else the calibration's

    @property
    def unlike_training_sites(self) -> bool | None:
        if self.in_distribution is False:
            return None
        if self.kind is not None and self.ood_distance is not None and self.ood_threshold is not None:
            # The check said "right kind": beyond the distance threshold it is another site, not another organ.
            if self.ood_distance > self.ood_threshold:
                return True
        if self.distance_percentile is None:
            return None
        return site_shift.unlike_training_sites(self.distance_percentile)

    @property
    def warning(self) -> str | None:
        warnings = []
        if self.colour_source:
            warnings.append(
                f"this image is a colour picture, but the {self.disease} model reads gray images "
                "(X-ray, MRI or ultrasound): it is not the kind of image the model was trained on; "
                "do not trust its label"
            )
        elif self.kind is not None and self.kind.wrong_kind:
            warnings.append(
                f"this image looks like {self.kind.kind.words}, not {self.kind.expected.words} that the "
                f"{self.disease} model reads (modality check: {self.kind.probability:.0%} < "
                f"{self.kind.minimum:.0%}); do not trust its label"
            )
        elif self.in_distribution is False:
            warnings.append(
                f"this image does not look like the images the {self.disease} model was trained on "
                f"(out-of-distribution distance {self.ood_distance:.1f} > {self.ood_threshold:.1f}); "
                "do not trust its label"
            )
        elif self.unlike_training_sites:
            how_far = (
                f"distance percentile {self.distance_percentile:.0f} > {site_shift.SITE_SHIFT_PERCENTILE:.0f}"
                if self.distance_percentile is not None
                else f"distance {self.ood_distance:.1f} > {self.ood_threshold:.1f}"
            )
            warnings.append(
                f"this image is of the right kind but unlike most images of the sites the model was "
                f"trained at ({how_far}): expect the figures measured at held-out sites "
                "(the model card's generalisation), not its test part's"
            )
        if self.grayscale_source:
            warnings.append(
                "the image has no colour, but this model was trained on colour images: the answer was "
                "made from its gray copy and is less reliable; send the original colour image"
            )
        return "; ".join(warnings) or None


Outcome = Screening | Exception  # per image: the answer, or the domain error that image raised


def interpret(
    card: ModelCard, outputs: ImageOutputs, threshold: float | None = None, prevalence: float | None = None
) -> tuple[float, int, float]:
    """(calibrated P(infected), label index, threshold used) for one image; at `prevalence`, the answer moved to
    that share of disease and the card's screening threshold with it (an explicit threshold cuts as given)."""
    if not math.isfinite(outputs.log_odds):  # a model that breaks on an image must not answer NaN (or a 500)
        raise UnscorableImage("the model gave no numeric answer for this image: it cannot be screened")
    temperature, bias = card.calibration_parameters()
    shift = prevalence_shift(card, prevalence)
    screening = card.screening.threshold if card.screening else DEFAULT_THRESHOLD
    used = threshold if threshold is not None else shifted_score(screening, shift)
    probability = calibrated_score(float(outputs.log_odds), temperature, bias + shift)
    return probability, label_index(probability, used), used


def prevalence_shift(card: ModelCard, prevalence: float | None) -> float:
    """What to add to the calibrated log-odds at `prevalence` (0 at none)."""
    if prevalence is None:
        return 0.0
    calibrated_at = card.calibrated_prevalence()
    if calibrated_at is None:
        raise PrevalenceUnavailable(
            f"version {card.version} of the {card.disease} model does not record the share of disease its "
            "calibration was fitted at, so it cannot answer for another; leave out `prevalence`"
        )
    return prior_shift(calibrated_at, prevalence)


class InferencePipeline:
    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        metrics: ServiceMetrics | None = None,
        modality: ModalityCheck | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.modality = modality  # the service's modality check (app/runtime/modality_check.py), where it has one
        self.budget = DecodeBudget(
            settings.decode_memory_bytes(), settings.decode_wait_s, settings.decode_threads_count()
        )
        self._kind_executor = ThreadPoolExecutor(1, thread_name_prefix="modality")

    async def screen(
        self,
        disease: str,
        uploads: Sequence[Upload],
        *,
        threshold: float | None = None,
        prevalence: float | None = None,
        explain: bool = False,
        version: int | None = None,
    ) -> list[Outcome]:
        """Encoded images (PNG, JPEG, BMP, TIFF, GIF, DICOM) -> one outcome per image, in order."""
        check_threshold(threshold)
        prevalence = self._prevalence(disease, prevalence)
        self._check_count(len(uploads))
        served = self.registry.get(disease, version)
        card = served.loaded.card
        prevalence_shift(card, prevalence)  # a version that cannot answer at it refuses before any decoding
        if explain and not served.loaded.can_explain:
            raise ExplanationUnavailable(
                f"version {served.version} of the {disease} model has no Grad-CAM signature; "
                "re-export it with `python -m training calibrate`"
            )
        check = self.modality if self.modality is not None and self.modality.checks(card.modality) else None
        with self.registry.admitted(served, len(uploads)) as predict:  # a full queue answers 503 before decoding
            # Large images decode in worker threads side by side; gather keeps the order.
            decoded: list[DecodedImage | Exception] = list(
                await asyncio.gather(*(self._decode(u, served, card.input.spec(), check is not None) for u in uploads))
            )
            usable = [d for d in decoded if isinstance(d, DecodedImage)]
            batch = [scale(d.pixels) for d in usable]
            # The modality check runs beside the model: it needs no answer first.
            kinds_pending = asyncio.ensure_future(self._kinds(check, usable, card.modality))
            try:
                if not explain:
                    outputs = await predict(batch)
                    explanations: list[Explanation | None] = [None] * len(usable)
                else:  # the Grad-CAM pass needs no answer first: both model calls run side by side
                    sources = [u for u, d in zip(uploads, decoded, strict=True) if isinstance(d, DecodedImage)]
                    outputs, maps = await asyncio.gather(predict(batch), self._gradcam(served, batch))
                    labels = [
                        interpret(card, output, threshold, prevalence)[1]
                        if math.isfinite(output.log_odds)
                        else 1 - POSITIVE
                        for output in outputs
                    ]
                    explanations = list(await self._explain(served, maps, sources, labels))
                kinds = await kinds_pending
            finally:
                kinds_pending.cancel()
        answers = iter(zip(outputs, usable, explanations, kinds, strict=True))
        return [
            self._outcome(served, *next(answers), threshold=threshold, prevalence=prevalence)
            if isinstance(item, DecodedImage)
            else item
            for item in decoded
        ]

    async def screen_arrays(
        self,
        disease: str,
        images: np.ndarray,
        *,
        threshold: float | None = None,
        prevalence: float | None = None,
        version: int | None = None,
    ) -> list[Screening]:
        """Already-preprocessed float32 N x H x W x C in [0, 1] (the protocols' tensors) -> outcomes."""
        check_threshold(threshold)
        prevalence = self._prevalence(disease, prevalence)
        self._check_count(len(images))
        served = self.registry.get(disease, version)
        check_tensor(images, served.loaded.card.input.spec().shape)
        prevalence_shift(served.loaded.card, prevalence)  # refused before the model runs, as for uploads
        with self.registry.admitted(served, len(images)) as predict:
            outputs = await predict(list(np.asarray(images, dtype=np.float32)))
        return [
            self._screening(served, output, None, None, threshold=threshold, prevalence=prevalence)
            for output in outputs
        ]

    def _prevalence(self, disease: str, asked: float | None) -> float | None:
        """The request's share of disease, else the deployment's for this disease (settings), else none."""
        check_prevalence(asked)
        return asked if asked is not None else self.settings.prevalence.get(disease)

    def _check_count(self, count: int) -> None:
        """The same limit on every door: uploads, and the protocols' array instances."""
        if count > self.settings.max_images_per_request:
            raise TooManyImages(count, self.settings.max_images_per_request)

    async def _kinds(
        self, check: ModalityCheck | None, usable: list[DecodedImage], expected: Modality | None
    ) -> list[KindAnswer | None]:
        """The modality check's answer for each decoded image, in a worker thread; None each without a check."""
        if check is None or expected is None or not usable:
            return [None] * len(usable)
        pixels = np.stack([d.kind_pixels for d in usable])  # type: ignore[misc]
        # On its own single thread, one call at a time: 64 concurrent uploads in anyio's 40 threads ran as many
        # EfficientNet passes at once, each with its own activations (measured: 4.1 GB resident).
        answers = await asyncio.get_running_loop().run_in_executor(self._kind_executor, check.answers, pixels, expected)
        return list(answers)

    async def _decode(
        self, upload: Upload, served: ServedModel, spec: InputSpec, for_kind: bool = False
    ) -> DecodedImage | Exception:
        started = time.perf_counter()
        try:
            if not upload.data:
                raise EmptyUpload("the file is empty: send the image's bytes")
            if looks_like_dicom(upload.data, upload.content_type):
                # pydicom decodes the pixels as it opens the file: the whole of it goes to a worker thread,
                # within the budget its header's size asks for.
                size = await run_in_threadpool(dicom_decoded_bytes, upload.data, self.settings.max_image_pixels)
                async with self.budget.reserve(size):
                    return await run_in_threadpool(
                        partial(
                            decode,
                            upload.data,
                            spec,
                            max_pixels=self.settings.max_image_pixels,
                            content_type=upload.content_type,
                            for_kind=for_kind,
                        )
                    )
            header = read_header(
                upload.data, max_pixels=self.settings.max_image_pixels, content_type=upload.content_type
            )
            # A small image decodes faster (measured: 0.1-0.5 ms) than a hop to a worker thread and back;
            # a large one would stall every other request on the event loop, so it goes to a thread.
            if header.width * header.height <= self.settings.inline_decode_max_pixels:
                return decode_opened(header, spec, for_kind=for_kind)
            side = max(decoded_side(spec), modality.SIDE if for_kind else 0)
            fundus = spec.enhancement in (Enhancement.DISC, Enhancement.FUNDUS)
            copies = FUNDUS_WORKING_COPIES if fundus else WORKING_COPIES
            async with self.budget.reserve(decoded_bytes(header, side, copies)):
                return await run_in_threadpool(partial(decode_opened, header, spec, for_kind=for_kind))
        except (ImageError, EmptyUpload, DecodeBusy) as error:
            return error
        finally:
            if self.metrics is not None:
                self.metrics.observe_preprocessing(served.disease, served.version, time.perf_counter() - started)

    async def _gradcam(self, served: ServedModel, batch: list[np.ndarray]) -> np.ndarray:
        """Signed Grad-CAM maps of the batch, on the model thread."""
        if not batch:
            return np.zeros((0,))
        return await self.registry.run_blocking(served.loaded.explain, np.stack(batch))  # type: ignore[return-value]

    async def _explain(
        self, served: ServedModel, maps: np.ndarray, sources: list[Upload], labels: list[int]
    ) -> list[Explanation]:
        """Each image's heatmap for its answered class and its overlay, drawn in worker threads side by side."""
        spec = served.loaded.card.input.spec()
        return list(
            await asyncio.gather(
                *(
                    run_in_threadpool(self._explanation, signed, label, source, spec)
                    for signed, label, source in zip(maps, labels, sources, strict=True)  # type: ignore[call-overload]
                )
            )
        )

    def _explanation(self, signed_map: np.ndarray, label: int, source: Upload, spec: InputSpec) -> Explanation:
        heatmap = class_heatmap(signed_map, label)
        # The overlay is drawn on the image decoded at full scale: the model's input may come from a
        # reduced JPEG decode (a 224 px JPEG decodes at 112 px for a 64 px model).
        header = read_header(source.data, max_pixels=self.settings.max_image_pixels, content_type=source.content_type)
        image = load_first_frame(header)
        return Explanation(
            heatmap=heatmap.astype(np.float32),
            overlay_png=png_bytes(overlay(image, heatmap, region=model_region(image, spec))),
        )

    def _outcome(
        self, served: ServedModel, *answer, threshold: float | None, prevalence: float | None = None
    ) -> Outcome:
        """One image's screening, or in its place the error of an image the model could not score."""
        try:
            return self._screening(served, *answer, threshold=threshold, prevalence=prevalence)
        except UnscorableImage as error:
            return error

    def _screening(
        self,
        served: ServedModel,
        outputs: ImageOutputs,
        image: DecodedImage | None,
        explanation: Explanation | None,
        kind: KindAnswer | None = None,
        *,
        threshold: float | None,
        prevalence: float | None = None,
    ) -> Screening:
        card = served.loaded.card
        probability, label, used = interpret(card, outputs, threshold, prevalence)
        ood = card.out_of_distribution
        known = ood is not None and outputs.ood_distance is not None
        colour_source = bool(image and image.colour_source)
        quantiles = ood.validation_quantiles if ood else None
        return Screening(
            disease=served.disease,
            model_version=served.version or card.version,
            label=card.classes[label],
            score=probability,
            probabilities=as_percentages(probability, card.classes),
            threshold=used,
            prevalence=prevalence if prevalence is not None else card.calibrated_prevalence(),
            in_distribution=in_distribution(outputs, ood, colour_source, kind),
            ood_distance=outputs.ood_distance,
            ood_threshold=ood.threshold if ood else None,
            image_size=(image.width, image.height) if image else None,
            explanation=explanation,
            intended_use=card.intended_use,
            distance_percentile=(
                site_shift.distance_percentile(
                    outputs.ood_distance,  # type: ignore[arg-type]
                    *site_shift.with_threshold(quantiles, ood.threshold, ood.threshold_quantile * 100),  # type: ignore[union-attr]
                )
                if known and quantiles
                else None
            ),
            grayscale_source=bool(image and image.grayscale_source),
            colour_source=colour_source,
            kind=kind,
        )


def in_distribution(
    outputs: ImageOutputs, ood: OutOfDistribution | None, colour_source: bool, kind: KindAnswer | None = None
) -> bool | None:
    """False for a colour picture sent to a gray-modality model, whatever its distance; where the modality check
    answered, by its answer alone (the model's distance then says only "unlike my training sites"); else by
    the distance."""
    if colour_source:
        return False
    if kind is not None:
        return not kind.wrong_kind
    if ood is None or outputs.ood_distance is None:
        return None
    return bool(outputs.ood_distance <= ood.threshold)


def check_tensor(images: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Preprocessed images must be N x H x W x C of the model's input, finite, in [0, 1] (pixels / 255)."""
    if images.ndim != 4 or images.shape[1:] != shape or len(images) == 0:
        raise InvalidInput(
            f"arrays must have the model's input shape {list(shape)} (N x H x W x C), got {list(images.shape)}"
        )
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
        raise InvalidInput("array values must be finite and in [0, 1] (pixels / 255)")


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (0.0 <= threshold <= 1.0 and np.isfinite(threshold)):
        raise InvalidThreshold(threshold)


def check_prevalence(prevalence: float | None) -> None:
    if prevalence is not None and not (0.0 < prevalence < 1.0):  # NaN fails both comparisons
        raise InvalidPrevalence(prevalence)

"""Domain errors of the service (no HTTP here: app/api/errors.py maps them to responses)."""

from __future__ import annotations


class UnknownDisease(Exception):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown disease {name!r}; known: {', '.join(known) or 'none'}")
        self.name = name
        self.known = known


class UnknownVersion(Exception):
    def __init__(self, disease: str, version: int | str, served: list[int]) -> None:
        listed = ", ".join(map(str, served)) or "none"
        super().__init__(f"version {version} of the {disease} model is not served; served versions: {listed}")
        self.disease = disease
        self.version = version


class ModelUnavailable(Exception):
    """The disease is known but its model failed to load or is not ready yet."""


class MissingImage(Exception):
    def __init__(self) -> None:
        super().__init__(
            "send the image as multipart/form-data in the field 'file', or as the raw body with "
            "Content-Type image/* or application/dicom"
        )


class EmptyUpload(Exception):
    """No bytes were sent in the file field."""


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit:,} bytes")
        self.limit = limit


class Overloaded(Exception):
    """A model's queue is full; the client should retry after a moment."""

    def __init__(self, disease: str, retry_after_s: int = 1) -> None:
        super().__init__(f"the {disease} model is at capacity; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DecodeBusy(Overloaded):
    """The decode memory budget is full; the client should retry after a moment (app/runtime/decode_budget.py)."""

    def __init__(self, retry_after_s: int = 1) -> None:
        Exception.__init__(
            self, f"the service is decoding as many large images as its memory allows; retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class InvalidThreshold(Exception):
    def __init__(self, threshold: float) -> None:
        super().__init__(f"threshold must be a number from 0 to 1, got {threshold}")


class InvalidPrevalence(Exception):
    def __init__(self, prevalence: float) -> None:
        super().__init__(f"prevalence must be a share of disease between 0 and 1 (not either), got {prevalence}")


class PrevalenceUnavailable(Exception):
    """A version whose card does not say at what share of disease its calibration holds."""


class TooManyImages(Exception):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} images in one request; the limit is {limit}")


class InvalidInput(Exception):
    """An already-preprocessed tensor that does not fit the model (shape, or values outside [0, 1])."""

"""One DICOM instance in, MedScan's answers out: read its header, route it to the models of its kind (or the one
asked for), answer it through the one inference pipeline, and queue an SR for each answer in the outbox. STOW-RS
and the C-STORE SCP both adapt to this; a bad instance gets its reason and never stops the others."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from app.contract.dicom import error_kind, parse_dicom
from app.pacs.outbox import Outbox
from app.pacs.report import overlay_capture, structured_report
from app.pacs.routing import Route, route
from app.runtime.inference import InferencePipeline, Screening, Upload
from app.runtime.model_lookup import ModelLookup

# DICOM failure reasons (PS3.4 GG.4, PS3.18 STOW-RS): what a failed instance is reported with.
CANNOT_UNDERSTAND = 0xC000  # not a readable DICOM instance
NOT_AN_IMAGE = 0xA900  # a dataset without pixel data (a report, a plan); or not of the study asked for
NO_ROUTE = 0x0122  # no model answers this kind of instance
PROCESSING_FAILURE = 0x0110  # every model it was routed to failed on it


@dataclass
class InstanceOutcome:
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    answers: dict[str, Screening] = field(default_factory=dict)  # disease -> answer
    errors: dict[str, Exception] = field(default_factory=dict)  # disease -> why its model could not answer
    failure: str | None = None  # why the instance as a whole was not answered
    failure_code: int = 0
    reports: list[str] = field(default_factory=list)  # SOP Instance UIDs of the SRs queued

    @property
    def ok(self) -> bool:
        return self.failure is None


def read_header(data: bytes) -> Dataset:
    """The instance's attributes, every one parsed now: pydicom parses an element when it is first read, and an
    element it cannot parse (an unknown VR) would fail later, in routing or in the SR, as the request's error."""
    header = parse_dicom(data, stop_before_pixels=True, force=False)
    header.walk(lambda dataset, element: None)  # reading each element (sequences' items too) parses it
    return header


class PacsIngest:
    def __init__(
        self, pipeline: InferencePipeline, routes: list[Route], outbox: Outbox | None, overlays: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.routes = routes
        self.outbox = outbox
        self.overlays = overlays  # also send each answer's Grad-CAM overlay, as a Secondary Capture

    def _kinds(self) -> dict:
        lookup = ModelLookup(self.pipeline.registry)
        return {disease: card.modality for disease in lookup.diseases if (card := lookup.state(disease).card)}

    async def instance(self, data: bytes, disease: str | None = None, study: str | None = None) -> InstanceOutcome:
        """`disease`: that model instead of the routing table's; `study`: refuse an instance of another study."""
        try:
            header = await asyncio.to_thread(read_header, data)
            outcome = InstanceOutcome(str(header.SOPClassUID), str(header.SOPInstanceUID))
        except Exception as error:  # noqa: BLE001 - anything unreadable is this instance's failure, not the request's
            return InstanceOutcome(failure=f"not a readable DICOM instance ({error_kind(error)})",
                                   failure_code=CANNOT_UNDERSTAND)  # fmt: skip
        if study and str(header.get("StudyInstanceUID", "")) != study:
            outcome.failure, outcome.failure_code = f"not of study {study}", NOT_AN_IMAGE
            return outcome
        kinds = self._kinds()
        diseases = ([disease] if disease in kinds else []) if disease else route(header, self.routes, kinds)
        if not diseases:
            outcome.failure, outcome.failure_code = self._no_route(header, disease), NO_ROUTE
            return outcome
        for name in diseases:
            upload = Upload(data, content_type="application/dicom")
            (answer,) = await self.pipeline.screen(name, [upload], explain=self._overlay_of(name))
            if isinstance(answer, Exception):
                outcome.errors[name] = answer
            else:
                outcome.answers[name] = answer
        if not outcome.answers:
            first = next(iter(outcome.errors.values()))
            outcome.failure = str(first)
            outcome.failure_code = NOT_AN_IMAGE if "no pixel data" in str(first) else PROCESSING_FAILURE
            return outcome
        if self.outbox is not None:
            for answer in outcome.answers.values():
                outcome.reports += await asyncio.to_thread(self._queue, header, answer)
        return outcome

    def _overlay_of(self, disease: str) -> bool:
        return (
            self.overlays and self.outbox is not None and ModelLookup(self.pipeline.registry).state(disease).explainable
        )

    def _queue(self, header: Dataset, answer: Screening) -> list[str]:
        """The SR (and overlay) of one answer into the outbox; their SOP Instance UIDs."""
        assert self.outbox is not None
        objects = [structured_report(header, answer)]
        if answer.explanation is not None:
            objects.append(overlay_capture(header, answer))
        for dataset in objects:
            self.outbox.put(dataset)
        return [str(dataset.SOPInstanceUID) for dataset in objects]

    @staticmethod
    def _no_route(header: Dataset, disease: str | None) -> str:
        if disease:
            return f"no model named {disease!r} is served"
        modality, part = header.get("Modality", ""), header.get("BodyPartExamined", "")
        return f"no model answers this kind of instance (Modality {modality or '-'}, BodyPartExamined {part or '-'})"

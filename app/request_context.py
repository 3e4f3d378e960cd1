"""What the current request is, for logs and metrics: its id, and the model version that answered it.

Context variables, so that code deep in the pipeline can say which model it used without being
handed the request. The request middleware opens a context per request.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestInfo:
    request_id: str
    model: str | None = None
    version: int | None = None


_current: ContextVar[RequestInfo | None] = ContextVar("medscan_request", default=None)


def begin(request_id: str) -> RequestInfo:
    info = RequestInfo(request_id)
    _current.set(info)
    return info


def current() -> RequestInfo | None:
    return _current.get()


def note_model(model: str, version: int | None) -> None:
    """Record the model version that answers the current request (if there is one)."""
    info = _current.get()
    if info is not None:
        info.model, info.version = model, version


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record ('-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = _current.get()
        record.request_id = info.request_id if info else "-"
        return True

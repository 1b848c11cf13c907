"""The request being handled, for the code that accounts for it and the lines it logs.

The request middleware sets ``CURRENT_REQUEST`` for the time of each request; tasks
started while it is handled (a de-duplicated call, say) see the same record.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ("CURRENT_REQUEST", "RequestRecord", "current_request")


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, for its log line and the overhead metric."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    provider: str = ""
    model: str = ""
    attempts: int = 0
    retries: int = 0
    failovers: int = 0
    provider_s: float = 0.0
    queue_wait_s: float = 0.0


CURRENT_REQUEST: ContextVar[RequestRecord | None] = ContextVar(
    "aigateway_current_request", default=None
)


def current_request() -> RequestRecord | None:
    return CURRENT_REQUEST.get()
